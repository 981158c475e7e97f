"""The files of one search run, so a run can be inspected, reused and resumed after any crash.

Every file that is rewritten is written atomically (temporary file + ``os.replace``),
so a run killed at any moment leaves either the old or the new version, never half.
``evaluations.jsonl`` is append-only; the checkpoint records how many of its lines
belong to finished generations, and a resume cuts it back to that count.
"""
from __future__ import annotations

import csv
import io
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator

from pruner_zero.errors import ConfigError
from pruner_zero.files import RunLock, atomic_write_bytes, atomic_write_text, check_writable_dir, \
    dumps_json, read_json
from pruner_zero.measurement import Measurement
from pruner_zero.recipe import PLAIN, recipe_json
from pruner_zero.metric.symbolic import to_latex, to_sympy
from pruner_zero.search.candidate import recipe_of
from pruner_zero.search.checkpoint import Checkpoint
from pruner_zero.search.layout import (BASELINE_FIELDS, BASELINES, BEST_JSON, BEST_TXT, CHECKPOINT,
                                       CONFIG, EVALUATIONS, HALL_OF_FAME,
                                       HISTORY, HISTORY_FIELDS, INVALID, OK, STOPPED)
from pruner_zero.search.results import FinalResults, report_lines, tasks_combined
from pruner_zero.spread import by_task_metric, mean_std
from pruner_zero.windows import windows_note

if TYPE_CHECKING:
    from pruner_zero.search.config import SearchConfig

__all__ = ["BASELINES", "BEST_JSON", "BEST_TXT", "CHECKPOINT", "CONFIG", "EVALUATIONS",
           "HALL_OF_FAME", "HISTORY", "INVALID", "OK", "STOPPED", "HallOfFameEntry", "RunDir",
           "best_entry", "best_metric_text"]


@dataclass
class HallOfFameEntry:
    """One metric of the final hall of fame (rank 1 is the best)."""

    rank: int
    formula: str
    fitness: float
    score: float | None  # selection split: mean over calibration seeds of the fitness ratio
    score_std: float | None
    size: int
    height: int
    key: str | None = None
    tree: Any = field(default=None, repr=False, compare=False)
    chosen: bool = False  # the best metric of the run (lowest mean selection score)

    def as_dict(self) -> dict[str, Any]:
        """Everything but the tree (JSON-serialisable)."""
        return {"rank": self.rank, "formula": self.formula, "fitness": self.fitness,
                "score": self.score, "score_std": self.score_std, "size": self.size,
                "height": self.height, "key": self.key, "chosen": self.chosen}


class RunDir:
    """The run directory: config, checkpoint, evaluation log and final outputs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._log: IO[str] | None = None
        self.evaluation_lines = 0

    # ------------------------------------------------------------ lifecycle
    @contextmanager
    def lock(self, option: str = "--out") -> Iterator[None]:
        """Hold the directory's lock while a search or a resume works in it: a second process
        on the same --out is refused at once. A new run that fails its checks leaves nothing."""
        created = not self.path.exists()
        check_writable_dir(self.path, option)
        for name in (CONFIG, CHECKPOINT, EVALUATIONS, HISTORY, BASELINES, HALL_OF_FAME, BEST_JSON,
                     BEST_TXT):  # each is replaced by a rename at some point: never at the end
            if (self.path / name).exists() and not (self.path / name).is_file():
                raise ConfigError(f"{self.path / name} is not a file; the run directory is damaged")
        lock = RunLock(self.path, "search").acquire()
        try:
            yield
        finally:
            lock.release()
            if not self.holds_run():
                lock.path.unlink(missing_ok=True)
                if created and not any(self.path.iterdir()):
                    self.path.rmdir()

    def holds_run(self) -> bool:
        """True when a run was already started here (config or checkpoint present)."""
        return (self.path / CONFIG).is_file() or (self.path / CHECKPOINT).is_file()

    def check_new(self) -> None:
        """Refuse to start a new run where one already is (it would mix two runs' files)."""
        if self.holds_run():
            raise ConfigError(f"{self.path} already holds a search run; continue it with "
                              f"--resume {self.path} or choose another --out directory.")

    def create(self, config: dict[str, Any]) -> None:
        """Start a new run here; refuse a directory that already holds one."""
        self.check_new()
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} exists and is not a directory.")
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CONFIG, dumps_json(config, indent=2) + "\n")

    def read_config(self) -> dict[str, Any]:
        """The config of an existing run (what --resume needs)."""
        if not (self.path / CONFIG).is_file():
            raise ConfigError(f"no search run to resume in {self.path} (no {CONFIG}); "
                              "start a new run with --out instead.")
        config = read_json(self.path / CONFIG, "run config")
        if not isinstance(config, dict) or config.get("command") != "search":
            raise ConfigError(f"{self.path / CONFIG} is not the config of a search run.")
        return config

    def close(self) -> None:
        """Close the evaluation log."""
        if self._log is not None:
            self._log.close()
            self._log = None

    # ----------------------------------------------------------- checkpoint
    def load_checkpoint(self) -> Checkpoint | None:
        """The last checkpoint, or None when no generation finished yet."""
        path = self.path / CHECKPOINT
        if not path.exists():
            return None
        return Checkpoint.from_dict(read_json(path, "checkpoint"), path)

    def save_checkpoint(self, state: Checkpoint) -> None:
        """Atomically replace the checkpoint; the log is flushed first so its count is true."""
        if self._log is not None:
            self._log.flush()
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CHECKPOINT, dumps_json(state.as_dict()) + "\n")

    # ------------------------------------------------------- evaluation log
    def truncate_evaluations(self, lines: int) -> None:
        """Keep the first ``lines`` lines of evaluations.jsonl (drop an interrupted generation)."""
        self.close()
        path = self.path / EVALUATIONS
        data = path.read_bytes() if path.is_file() else b""
        kept = data.split(b"\n")[:lines]
        if data.count(b"\n") < lines:
            raise ConfigError(f"{path} has fewer lines than the checkpoint records ({lines}); "
                              "the run directory is inconsistent.")
        new = b"".join(line + b"\n" for line in kept)
        if new != data:
            atomic_write_bytes(path, new)
        self.evaluation_lines = lines

    def append_evaluation(self, record: dict[str, Any]) -> None:
        """One line per evaluated candidate, flushed so a kill loses at most the line being written."""
        if self._log is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._log = open(self.path / EVALUATIONS, "a", encoding="utf-8")
        self._log.write(dumps_json(record) + "\n")
        self._log.flush()
        self.evaluation_lines += 1

    # ------------------------------------------------------------- outputs
    def write_history(self, history: list[dict[str, Any]]) -> None:
        """history.csv: one row per generation (the polish step last, polish = 1)."""
        rows = [{**{k: h.get(k) for k in HISTORY_FIELDS}, "polish": int(bool(h.get("polish")))}
                for h in history]
        atomic_write_text(self.path / HISTORY, _csv(HISTORY_FIELDS, rows))

    def write_baselines(self, rows: list[Measurement]) -> None:
        """baselines.csv: every baseline measurement (fitness windows, selection, report)."""
        atomic_write_text(self.path / BASELINES, _csv(BASELINE_FIELDS, [r.as_dict() for r in rows]))

    def write_outputs(self, entries: list[HallOfFameEntry], fitness_note: str,
                      final: FinalResults | None = None, config: SearchConfig | None = None) -> None:
        """best_metric.json/.txt, hall_of_fame.csv and baselines.csv from the final results."""
        names = final.baseline_names if final else []
        sel_rows = final.selection_rows if final else []
        tasks = list(dict.fromkeys(r.task for r in sel_rows))
        means = _means(sel_rows)
        head = ["rank", "fitness", "selection", "selection_std"]
        per_task = [f"{t}:ppl" for t in tasks] + [f"{t}:/{n}" for t in tasks for n in names]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(head + per_task + ["chosen", "size", "height", "formula"])
        for e in entries:
            cells = []
            if e.score is not None:
                cells = [_num(means[(t, e.formula)]) for t in tasks]
                cells += [_num(means[(t, e.formula)] / means[(t, n)]) for t in tasks for n in names]
            else:
                cells = [""] * len(per_task)
            writer.writerow([e.rank, _num(e.fitness), _opt(e.score), _opt(e.score_std), *cells,
                             int(e.chosen), e.size, e.height, e.formula])
        atomic_write_text(self.path / HALL_OF_FAME, buf.getvalue())
        baseline_rows = [] if final is None else final.baselines_fitness + \
            [r for r in sel_rows + final.report_rows if r.metric in names]
        if baseline_rows:
            self.write_baselines(baseline_rows)
        if not entries:
            for name in (BEST_JSON, BEST_TXT):
                (self.path / name).unlink(missing_ok=True)
            return
        best = best_entry(entries)
        recipe = recipe_of(best.tree) or (PLAIN if config is None else config.recipe())
        atomic_write_text(self.path / BEST_JSON, dumps_json(recipe_json(best.tree, recipe),
                                                            indent=2) + "\n")
        atomic_write_text(self.path / BEST_TXT, best_metric_text(best, fitness_note, entries,
                                                                 final, config))


def _csv(fields: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _num(v) if isinstance(v, float) else v for k, v in r.items()})
    return buf.getvalue()


def _means(rows: list[Measurement]) -> dict[tuple[str, str], float]:
    """(task, metric) -> mean ppl over seeds (inf when any seed is)."""
    return {k: mean_std(v)[0] for k, v in by_task_metric(rows).items()}


def _opt(value: float | None) -> str:
    return "" if value is None else _num(value)


def _num(value: float) -> str:
    """Full precision (repr), so a resumed run's file can be compared byte for byte."""
    return repr(float(value)) if math.isfinite(value) else str(value)


def best_entry(entries: list[HallOfFameEntry]) -> HallOfFameEntry:
    """The metric a search recommends: of the top metrics re-measured on the selection split
    over several calibration seeds, the lowest mean (the fitness subset and one seed only
    approximate it); rank 1 when none was re-measured."""
    chosen = [e for e in entries if e.chosen]
    if chosen:
        return chosen[0]
    measured = _remeasured(entries)
    return min(measured, key=lambda e: (e.score, e.rank)) if measured else entries[0]


def _remeasured(entries: list[HallOfFameEntry]) -> list[HallOfFameEntry]:
    """Entries with a finite selection score."""
    return [e for e in entries if e.score is not None and math.isfinite(e.score)]


def best_metric_text(best: HallOfFameEntry, fitness_note: str, entries: list[HallOfFameEntry],
                     final: FinalResults | None = None, config: SearchConfig | None = None) -> str:
    """Human-readable summary of the best metric: formula, sympy, LaTeX, fitness, the selection
    score over calibration seeds, and per task its report-split perplexity beside the baselines."""
    try:
        sym, latex = str(to_sympy(best.tree)), to_latex(best.tree)
    except Exception as exc:  # noqa: BLE001 -- a display problem must not lose the result
        sym = latex = f"unavailable ({type(exc).__name__}: {exc})"
    measured = len(_remeasured(entries))
    seeds = 1 if config is None else config.confirm_seeds
    ref = "the reference" if config is None else config.reference
    why = (f"lowest mean selection score of the {measured} re-measured" if measured
           else "best fitness; none re-measured on the selection split")
    combined = "" if config is None else tasks_combined(config)
    score = "not measured" if best.score is None else \
        f"{_num(best.score)} ± {_num(best.score_std or 0.0)} (mean ± std over {seeds} calibration " \
        f"seeds of {combined}ppl / ppl({ref}) on " \
        f"{windows_note('the selection split', None if config is None else config.confirm_windows)})"
    recipe = recipe_of(best.tree) or (PLAIN if config is None else config.recipe())
    text = (f"formula:   {best.formula}\n"
            + ("" if recipe.plain else f"recipe:    {recipe.describe()} (best_metric.json holds "
                                       "it: prune --metric reuses it)\n")
            + ("" if config is None or config.compare == "row" else
               f"masks:     ranked per {config.compare} (give prune --compare {config.compare} "
               "too: a metric file does not hold it)\n")
            + f"sympy:     {sym}\n"
            f"latex:     {latex}\n"
            f"rank:      {best.rank} of {len(entries)} in hall_of_fame.csv ({why})\n"
            f"fitness:   {_num(best.fitness)} ({fitness_note})\n"
            f"selection: {score}\n"
            f"size:      {best.size}\n"
            f"height:    {best.height}\n")
    lines = report_lines(final, config) if final is not None and config is not None else []
    if lines:
        text += ("\nreport split (never used for fitness or selection), perplexity mean ± std over "
                 "calibration seeds; a difference within the larger std is a tie:\n")
        text += "\n".join(lines) + "\n"
    return text
