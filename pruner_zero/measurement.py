"""``Measurement``: one perplexity, the record every table of this project is made of (a
comparison's leaderboard, a search's baselines, confirmation and report). Written to JSON and
CSV and read back here alone. Light (no torch)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Measurement:
    """``metric`` pruned on ``task`` with calibration ``seed``, its perplexity on ``windows``
    windows of ``split`` (inf, with ``error`` saying why, when the metric failed there)."""

    metric: str  # the label measured: a name, a formula, or a search's rank (#1, ...)
    task: str
    seed: int
    split: str
    ppl: float
    windows: int | None = None
    formula: str | None = None
    phase: str | None = None  # a search's: fitness, selection or report
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON record (the optional fields only when set, as the files always had them)."""
        d: dict[str, Any] = {} if self.phase is None else {"phase": self.phase}
        d.update(metric=self.metric, task=self.task, seed=self.seed, split=self.split,
                 windows=self.windows, ppl=self.ppl)
        for key in ("error", "formula"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Measurement":
        """A stored record; strict JSON wrote an infinite perplexity as null: inf again."""
        ppl = d.get("ppl")
        return cls(metric=d["metric"], task=d["task"], seed=d["seed"], split=d.get("split", ""),
                   ppl=math.inf if ppl is None else ppl, windows=d.get("windows"),
                   formula=d.get("formula"), phase=d.get("phase"), error=d.get("error"))
