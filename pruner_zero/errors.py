"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class PrunerZeroError(Exception):
    """Base for every error caused by user input or environment, not by a bug."""


class MetricError(PrunerZeroError):
    """A metric cannot be parsed, loaded, or yields unusable scores."""


class ModelError(PrunerZeroError):
    """A model cannot be loaded or is not a supported causal LM."""


class DataError(PrunerZeroError):
    """Calibration/evaluation data is missing or too short."""


class ConfigError(PrunerZeroError):
    """An option is out of range or inconsistent with the model."""


def describe(exc: BaseException) -> str:
    """An exception in one line, for a message that goes on: its type and the start of its text
    (the first two lines: the first alone often ends in a colon)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = " ".join(lines[:2])[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


CANDIDATE_ERRORS = (PrunerZeroError, RuntimeError, ValueError, ArithmeticError)
"""What evaluating one candidate metric may raise: the candidate is then invalid (its reason
recorded), the search goes on. Anything else is a bug and ends the run."""
