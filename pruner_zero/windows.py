"""Window budgets: how many windows of a split a perplexity reads, and that fact in words.
Torch-free, so the command line checks a budget before anything heavy loads."""
from __future__ import annotations

from .errors import ConfigError


def window_budget(value: int | None, name: str) -> int | None:
    """A window budget as every front end reads it: None or 0 = every window of the split, a
    positive integer N = N windows spread evenly over it."""
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{name} must be a positive number of windows (0 or None: all), "
                          f"got {value!r}")
    return value


def windows_note(split: str, budget: int | None, measured: int | None = None) -> str:
    """Which windows a perplexity rests on, in words, for logs and reports."""
    if budget is None or (measured is not None and measured < budget):
        return f"all {'' if measured is None else f'{measured} '}windows of {split}"
    return f"{budget} windows spread evenly over {split}"
