"""Perplexities measured before, kept in the cache directory as small JSON files keyed by all the
number depends on (model files, tokens, metric, recipe, structure, dtype): a comparison or a
search's tail that was stopped measures again only what it had not finished. Like the
statistics cache, optional: a file that cannot be read is measured again, one that cannot be
written costs nothing but the cache."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .files import atomic_write_json, read_json

FORMAT = 1
"""Part of every key: raise it when a change to pruning or evaluation changes what is measured,
so no number measured before is served as one of the new code's."""


def ppl_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"ppl-{key}.json"


def read_ppl(cache_dir: Path, key: str, what: str, log: Callable[[str], None]) -> float | None:
    """The perplexity stored under ``key``, or None (absent, damaged or another measurement's:
    the last two with a warning)."""
    path = ppl_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        cached = read_json(path, f"{what} cache")
    except ConfigError as exc:
        log(f"warning: {exc}; measuring again")
        return None
    ppl = cached.get("ppl") if isinstance(cached, dict) else None
    if isinstance(ppl, float) and cached.get("key") == key and math.isfinite(ppl) and ppl > 0:
        return ppl
    log(f"warning: {path} is not the {what} of this model; measuring again")
    return None


def write_ppl(cache_dir: Path, key: str, record: dict[str, Any], what: str,
              log: Callable[[str], None]) -> None:
    """Store a finite perplexity under ``key``; a full or read-only disk costs only the cache."""
    if not math.isfinite(record.get("ppl", math.inf)):
        return
    try:
        atomic_write_json(ppl_path(cache_dir, key), {"key": key, **record})
    except OSError as exc:
        log(f"warning: {what} not cached in {cache_dir} ({exc.strerror or exc}); going on "
            "without the cache")
