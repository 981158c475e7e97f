"""The files of one search run, so a run can be inspected, reused and resumed after any crash.

Every file that is rewritten is written atomically (temporary file + ``os.replace``),
so a run killed at any moment leaves either the old or the new version, never half.
``evaluations.jsonl`` is append-only; the checkpoint records how many of its lines
belong to finished generations, and a resume cuts it back to that count.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, IO

from pruner_zero.errors import ConfigError

CONFIG = "config.json"
CHECKPOINT = "checkpoint.json"
EVALUATIONS = "evaluations.jsonl"
BEST_JSON = "best_metric.json"
BEST_TXT = "best_metric.txt"
HALL_OF_FAME = "hall_of_fame.csv"
CHECKPOINT_VERSION = 1


@dataclass
class HallOfFameEntry:
    """One metric of the final hall of fame (rank 1 is the best)."""

    rank: int
    formula: str
    fitness: float
    ppl: float | None
    size: int
    height: int
    key: str | None = None
    tree: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """Everything but the tree (JSON-serialisable)."""
        return {"rank": self.rank, "formula": self.formula, "fitness": self.fitness, "ppl": self.ppl,
                "size": self.size, "height": self.height, "key": self.key}


def atomic_write_text(path: Path, text: str) -> None:
    """Write a whole file so that readers (and resumes) never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _dumps(obj: Any, indent: int | None = None) -> str:
    """JSON as Python writes it (inf as Infinity, like every other JSON file of this project)."""
    return json.dumps(obj, indent=indent, allow_nan=True)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}".replace("\n", " ")) from exc


class RunDir:
    """The run directory: config, checkpoint, evaluation log and final outputs."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._log: IO[str] | None = None
        self.evaluation_lines = 0

    # ------------------------------------------------------------ lifecycle
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
        atomic_write_text(self.path / CONFIG, _dumps(config, indent=2) + "\n")

    def read_config(self) -> dict[str, Any]:
        """The config of an existing run (what --resume needs)."""
        if not (self.path / CONFIG).is_file():
            raise ConfigError(f"no search run to resume in {self.path} (no {CONFIG}); "
                              "start a new run with --out instead.")
        config = _read_json(self.path / CONFIG, "run config")
        if not isinstance(config, dict) or config.get("command") != "search":
            raise ConfigError(f"{self.path / CONFIG} is not the config of a search run.")
        return config

    def close(self) -> None:
        """Close the evaluation log."""
        if self._log is not None:
            self._log.close()
            self._log = None

    # ----------------------------------------------------------- checkpoint
    def load_checkpoint(self) -> dict[str, Any] | None:
        """The last checkpoint, or None when no generation finished yet."""
        path = self.path / CHECKPOINT
        if not path.is_file():
            return None
        state = _read_json(path, "checkpoint")
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(f"{path} is not a checkpoint this version can resume "
                              f"(expected version {CHECKPOINT_VERSION}).")
        return state

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Atomically replace the checkpoint; the log is flushed first so its count is true."""
        if self._log is not None:
            self._log.flush()
        state = {"version": CHECKPOINT_VERSION, **state}
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / CHECKPOINT, _dumps(state) + "\n")

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
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(new)
            os.replace(tmp, path)
        self.evaluation_lines = lines

    def append_evaluation(self, record: dict[str, Any]) -> None:
        """One line per evaluated candidate, flushed so a kill loses at most the line being written."""
        if self._log is None:
            self.path.mkdir(parents=True, exist_ok=True)
            self._log = open(self.path / EVALUATIONS, "a", encoding="utf-8")
        self._log.write(_dumps(record) + "\n")
        self._log.flush()
        self.evaluation_lines += 1

    # ------------------------------------------------------------- outputs
    def write_outputs(self, entries: list[HallOfFameEntry], fitness_note: str) -> None:
        """best_metric.json/.txt and hall_of_fame.csv from the final hall of fame."""
        from pruner_zero.metric.io import to_paper_json

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["rank", "fitness", "ppl", "size", "height", "formula"])
        for e in entries:
            writer.writerow([e.rank, _num(e.fitness), "" if e.ppl is None else _num(e.ppl),
                             e.size, e.height, e.formula])
        atomic_write_text(self.path / HALL_OF_FAME, buf.getvalue())
        if not entries:
            for name in (BEST_JSON, BEST_TXT):
                (self.path / name).unlink(missing_ok=True)
            return
        best = best_entry(entries)
        atomic_write_text(self.path / BEST_JSON, json.dumps(to_paper_json(best.tree), indent=2) + "\n")
        atomic_write_text(self.path / BEST_TXT, best_metric_text(best, fitness_note, entries))


def _num(value: float) -> str:
    """Full precision (repr), so a resumed run's file can be compared byte for byte."""
    return repr(float(value)) if math.isfinite(value) else str(value)


def best_entry(entries: list[HallOfFameEntry]) -> HallOfFameEntry:
    """The metric a search recommends: of the top metrics re-measured on the whole split, the one
    with the lowest perplexity there (the fitness subset only approximates it; near-ties in fitness
    can swap); rank 1 when none was re-measured."""
    measured = _remeasured(entries)
    return min(measured, key=lambda e: (e.ppl, e.rank)) if measured else entries[0]


def _remeasured(entries: list[HallOfFameEntry]) -> list[HallOfFameEntry]:
    """Entries with a finite full-split perplexity."""
    return [e for e in entries if e.ppl is not None and math.isfinite(e.ppl)]


def best_metric_text(best: HallOfFameEntry, fitness_note: str,
                     entries: list[HallOfFameEntry]) -> str:
    """Human-readable summary of the best metric: formula, sympy, LaTeX, fitness, full-split ppl."""
    from pruner_zero.metric.symbolic import to_latex, to_sympy

    try:
        sym, latex = str(to_sympy(best.tree)), to_latex(best.tree)
    except Exception as exc:  # noqa: BLE001 -- a display problem must not lose the result
        sym = latex = f"unavailable ({type(exc).__name__}: {exc})"
    ppl = "not measured" if best.ppl is None else _num(best.ppl)
    measured = len(_remeasured(entries))
    why = (f"lowest full-split ppl of the {measured} re-measured" if measured
           else "best fitness; none re-measured (finite) on the whole split")
    return (f"formula: {best.formula}\n"
            f"sympy:   {sym}\n"
            f"latex:   {latex}\n"
            f"rank:    {best.rank} of {len(entries)} in hall_of_fame.csv ({why})\n"
            f"fitness: {_num(best.fitness)} ({fitness_note})\n"
            f"ppl:     {ppl} (perplexity on the whole evaluation split)\n"
            f"size:    {best.size}\n"
            f"height:  {best.height}\n")
