"""What a search's tail measured (``FinalResults``): written into checkpoint.json as 'final' and
read back by this module alone, and said in words (``report_lines``, ``fitness_note``).

Light (no torch): the CLI's result line and ``report`` read it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..files import read_json
from ..measurement import Measurement
from ..spread import by_task_metric, mean_std, verdict
from .layout import CHECKPOINT

if TYPE_CHECKING:
    from .config import SearchConfig


@dataclass(frozen=True)
class Selection:
    """A metric's selection score: per calibration seed, the tasks' ppl / ppl(reference) on the
    selection split combined as the fitness combines them; its mean and sample std."""

    score: float
    std: float
    scores: list[float]


@dataclass(frozen=True)
class FinalResults:
    """The confirmation over calibration seeds on the selection split, and the report split.

    Rows are ``Measurement`` records (phase selection, report, fitness)."""

    selection_rows: list[Measurement]
    report_rows: list[Measurement]
    selection: dict[str, Selection]  # formula or baseline name -> its score
    top: list[str]  # the hall-of-fame formulas re-measured, in rank order
    baseline_names: list[str]  # the reference first
    best: str | None = None  # the chosen formula (None: no valid metric)
    best_rank: int | None = None
    seeds: dict[str, list[int]] = field(default_factory=dict)  # task -> its calibration seeds
    baselines_fitness: list[Measurement] = field(default_factory=list)  # at the start

    def as_dict(self) -> dict[str, Any]:
        """checkpoint.json's 'final'."""
        return {"selection_rows": [r.as_dict() for r in self.selection_rows],
                "report_rows": [r.as_dict() for r in self.report_rows],
                "selection": {k: asdict(v) for k, v in self.selection.items()},
                "top": list(self.top), "baseline_names": list(self.baseline_names),
                "best": self.best, "best_rank": self.best_rank,
                "seeds": {k: list(v) for k, v in self.seeds.items()},
                "baselines_fitness": [r.as_dict() for r in self.baselines_fitness]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FinalResults":
        """A checkpoint's 'final', checked by ``problem`` and revived by ``revive`` first."""
        selection = {k: Selection(v["score"], v["std"], list(v.get("scores") or []))
                     for k, v in d["selection"].items()}
        def rows(key: str) -> list[Measurement]:
            return [Measurement.from_dict(r) for r in d.get(key) or []]

        return cls(selection_rows=rows("selection_rows"), report_rows=rows("report_rows"),
                   selection=selection, top=list(d["top"]),
                   baseline_names=list(d["baseline_names"]), best=d.get("best"),
                   best_rank=d.get("best_rank"), seeds=dict(d.get("seeds") or {}),
                   baselines_fitness=rows("baselines_fitness"))

    @staticmethod
    def revive(d: Any) -> None:
        """Strict JSON wrote a stored 'final''s infinities as null: infinities again, in place
        (every one of these numbers was measured, so null can only have been inf)."""
        if not isinstance(d, dict):
            return
        for key in ("selection_rows", "report_rows", "baselines_fitness"):
            for r in d.get(key) or []:
                if isinstance(r, dict) and "ppl" in r:
                    r["ppl"] = _inf(r["ppl"])
        for sel in (d.get("selection") or {}).values():
            if isinstance(sel, dict):
                for k in ("score", "std"):
                    if k in sel:
                        sel[k] = _inf(sel[k])
                if isinstance(sel.get("scores"), list):
                    sel["scores"] = [_inf(v) for v in sel["scores"]]

    @staticmethod
    def problem(d: Any) -> str | None:
        """What is wrong with a stored 'final', or None: a damaged file is refused by name."""
        if not isinstance(d, dict):
            return "a finished run without its 'final' results"
        for key, kind in (("selection_rows", list), ("report_rows", list), ("selection", dict),
                          ("top", list), ("baseline_names", list)):
            if not isinstance(d.get(key), kind):
                return f"'final.{key}' is missing or has the wrong type"
        if not isinstance(d.get("baselines_fitness") or [], list):
            return "'final.baselines_fitness' has the wrong type"
        for key in ("selection_rows", "report_rows", "baselines_fitness"):
            for i, r in enumerate(d.get(key) or []):
                if not (isinstance(r, dict) and isinstance(r.get("metric"), str)
                        and isinstance(r.get("task"), str) and isinstance(r.get("seed"), int)
                        and _number_or_null(r.get("ppl"))):
                    return f"'final.{key}'[{i}] is not a measurement"
        for k, v in d["selection"].items():
            if not (isinstance(v, dict) and _number_or_null(v.get("score"))
                    and _number_or_null(v.get("std"))):
                return f"'final.selection.{k}' is not a score"
        return None


def read_final(run: Path) -> FinalResults | None:
    """The final results stored in a run directory's checkpoint, None while it runs (or when
    the file is not there or damaged: what reads this only summarises)."""
    path = run / CHECKPOINT
    if not path.is_file():
        return None
    state = read_json(path, "checkpoint")
    final = state.get("final") if isinstance(state, dict) else None
    if final is None or FinalResults.problem(final) is not None:
        return None
    FinalResults.revive(final)
    return FinalResults.from_dict(final)


def _inf(value: Any) -> Any:
    return math.inf if value is None else value


def _number_or_null(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def tasks_combined(config: SearchConfig) -> str:
    """How the fitness and the selection score combine several tasks' ratios, as a prefix
    ("" for one task)."""
    if len(config.task_list or ()) < 2:
        return ""
    return "the worst task's " if config.task_combine == "worst" else \
        "weighted geometric mean over tasks of "


def fitness_note(config: SearchConfig) -> str:
    """What the fitness column measures, for best_metric.txt."""
    n, tasks = config.fitness_windows, config.task_list or ()
    splits = sorted({t.fitness_split for t in tasks})
    windows = "all windows of" if n is None else f"{n} windows spread evenly over"
    return (f"{tasks_combined(config)}ppl / ppl({config.reference}), on {windows} the selection "
            f"split ({', '.join(splits)})")


def report_lines(final: FinalResults, config: SearchConfig) -> list[str]:
    """The report split, per task: the best metric and each baseline, mean ± std over the
    calibration seeds, and whether the best wins, loses or ties (within the seed spread)."""
    rows = final.report_rows
    if not rows:
        return []
    by = by_task_metric(rows)
    names, best = final.baseline_names, final.best
    out = []
    for t in config.task_list or ():
        task, split = t.name, t.report_split
        seeds = len(by[(task, names[0])])
        windows = next((r.windows for r in rows if r.task == task), None)
        where = split if windows is None else f"{split}, {windows} windows"
        if seeds < 2 and not out:
            out.append("(one calibration seed: no spread is measured, so better/worse below "
                       "are not tested against calibration noise; use --confirm-seeds 3)")
        if best is None:
            out.append(f"report [{task}, {where}, {seeds} seeds] no valid metric was found")
        else:
            m, s = mean_std(by[(task, best)])
            out.append(f"report [{task}, {where}, {seeds} seeds] best {m:.4f} ± {s:.4f}")
        for n in names:
            bm, bs = mean_std(by[(task, n)])
            than = "" if best is None else f"  -> best is {verdict(by[(task, best)], by[(task, n)])}"
            out.append(f"    {n:<12} {bm:.4f} ± {bs:.4f}{than}")
    return out
