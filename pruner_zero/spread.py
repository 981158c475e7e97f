"""Numbers over calibration seeds: mean ± std, the tie rule, and measurement rows grouped by
task and metric. Light (no torch): the CLI and the run directory read results with it."""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Hashable, Iterable, Sequence, TypeVar

from .measurement import Measurement

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value); inf when any value is."""
    vals = [float(v) for v in values]
    if not vals or any(not math.isfinite(v) for v in vals):
        return math.inf, math.inf
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def verdict(a: Sequence[float], b: Sequence[float]) -> str:
    """``better``/``worse`` when a's mean differs from b's by more than the larger seed spread
    (std over calibration seeds) of the two, else ``tie``: a smaller difference is noise."""
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    if not (math.isfinite(ma) and math.isfinite(mb)):
        return "better" if math.isfinite(ma) else "worse" if math.isfinite(mb) else "tie"
    if abs(ma - mb) <= max(sa, sb):
        return "tie"
    return "better" if ma < mb else "worse"


def grouped(rows: Iterable[Any], key: Callable[[Any], K], value: Callable[[Any], V]
            ) -> dict[K, list[V]]:
    """Rows grouped by ``key`` (groups in first-seen order, rows in their order), each as
    ``value``: every table of means over calibration seeds starts here."""
    out: dict[K, list[V]] = {}
    for r in rows:
        out.setdefault(key(r), []).append(value(r))
    return out


def by_task_metric(rows: Iterable[Measurement]) -> dict[tuple[str, str], list[float]]:
    """Measurements (seed order kept) as (task, metric) -> perplexities."""
    return grouped(rows, lambda r: (r.task, r.metric), lambda r: r.ppl)
