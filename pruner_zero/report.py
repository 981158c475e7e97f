"""`pruner-zero report RUN`: plots and a markdown summary of a (finished or running) search run.

Everything is read from the run directory's files, so a report can be made of a run on another
machine, of an old run, or of one still in progress; any file that is missing only drops the part
of the report that needs it (report.md says which). Fitness is lower-is-better: the weighted
geometric mean over tasks of ppl(candidate) / ppl(reference metric), or the worst task's ratio
(a run with ``--task-combine worst``).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError
from .files import atomic_write_text, atomic_write_with, check_writable_dir
from .search.layout import (BASELINES, BEST_TXT, CONFIG, EVALUATIONS, HALL_OF_FAME, HISTORY)
from .spread import grouped

FITNESS_MEANING = {
    "mean": "fitness = weighted geo-mean over tasks of ppl / ppl({ref})  (lower is better)",
    "worst": "fitness = the worst task's ppl / ppl({ref})  (lower is better)"}
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?")


# ----------------------------------------------------------------------------- reading
def _float(s: Any) -> float:
    """float() that takes inf/Infinity/nan as older runs wrote them and null as a number that
    was not finite (how strict JSON writes it); blanks and junk become nan."""
    if s is None:
        return math.inf
    try:
        return float(s)
    except (TypeError, ValueError):
        return math.nan


def _read_csv(path: Path) -> list[dict[str, str]] | None:
    """Rows of a CSV file, or None when absent or unreadable (that report part is skipped)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a spreadsheet's BOM too
            return list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None


def read_evaluations(path: Path) -> tuple[list[dict[str, Any]], int] | None:
    """Parsed evaluations.jsonl and the count of unparsable lines before the last one.

    A running search may be writing the last line right now, so a broken last line is dropped
    silently; broken lines elsewhere are dropped too but counted, so report.md can mention them.
    """
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    records, bad = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)  # also older runs' Infinity / NaN
        except (ValueError, RecursionError):  # also an integer of 5000 digits
            bad += i < len(lines) - 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records, bad


def formula_size(formula: str) -> int:
    """Number of tree nodes of a formula string (ops + terminals), for old logs without `size`."""
    return len(_TOKEN.findall(formula))


# ----------------------------------------------------------------------------- computing
def baseline_fitness(rows: Iterable[dict[str, Any]], reference: str,
                     weights: dict[str, float] | None = None,
                     phase: str = "fitness", combine: str = "mean") -> dict[str, float]:
    """Fitness of each baseline metric, comparable with the search's fitness values.

    Uses the `phase` rows of baselines.csv (ppl averaged over repeated rows of a metric and task),
    over the tasks the reference was measured on; a task without weight counts 1. A metric missing
    one of those tasks is left out, since its value would not be comparable. ``combine``: as the
    run's fitness.task_combine, "mean" or "worst" (the largest ratio)."""
    ppl: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r.get("phase", phase) == phase:
            ppl.setdefault((r["metric"], r["task"]), []).append(_float(r["ppl"]))
    mean = {k: statistics.fmean(v) for k, v in ppl.items()}
    tasks = sorted(t for m, t in mean if m == reference)
    if not tasks:
        return {}
    weights = weights or {}
    out: dict[str, float] = {}
    for metric in sorted({m for m, _ in mean}):
        if any((metric, t) not in mean for t in tasks):
            continue
        ratios = [mean[(metric, t)] / mean[(reference, t)] for t in tasks]
        logs = [weights.get(t, 1.0) * (math.log(r) if r > 0 else -math.inf)
                for t, r in zip(tasks, ratios)]
        out[metric] = 1.0 if metric == reference else max(ratios) if combine == "worst" else \
            math.exp(sum(logs) / sum(weights.get(t, 1.0) for t in tasks))
    return out


def pareto_front(points: Iterable[tuple[int, float]]) -> list[tuple[int, float]]:
    """(size, fitness) points no smaller-or-equal metric beats, by increasing size: the trade-off
    between a metric's complexity and its quality. Non-finite fitness values are ignored."""
    best_per_size: dict[int, float] = {}
    for size, fit in points:
        if math.isfinite(fit):
            best_per_size[size] = min(fit, best_per_size.get(size, math.inf))
    front, best = [], math.inf
    for size in sorted(best_per_size):
        if best_per_size[size] < best:
            best = best_per_size[size]
            front.append((size, best))
    return front


# ----------------------------------------------------------------------------- plotting
def _limits(core: list[float], extra: list[float]) -> tuple[float, float, float]:
    """y range showing `core` in full and `extra` values that are not far above it, so a terrible
    baseline or median does not squash the curves; returns (low, high, cutoff for off-scale)."""
    core = [v for v in core if math.isfinite(v)]
    lo, hi = min(core), max(core)
    span = max(hi - lo, 0.05 * abs(hi), 1e-3)
    cutoff = hi + 2 * span
    shown = core + [v for v in extra if math.isfinite(v) and v <= cutoff]
    lo, hi = min(shown), max(shown)
    pad = 0.06 * max(hi - lo, 1e-3)
    return lo - pad, hi + pad, cutoff


def _draw_baselines(ax: Any, base: dict[str, float], cutoff: float) -> None:
    """Horizontal line per baseline, named in the right margin (labels spread so none overlap);
    baselines above the plotted range are named at the top instead."""
    lo, hi = ax.get_ylim()
    shown = sorted((v, m) for m, v in base.items() if math.isfinite(v) and v <= cutoff)
    y_prev = -math.inf
    for v, m in shown:
        ax.axhline(v, color="0.35", lw=1, ls=":", zorder=1)
        y = max((v - lo) / (hi - lo), y_prev + 0.045)
        y_prev = y
        ax.text(1.01, y, f"{m} {v:.3f}", transform=ax.transAxes, va="center", fontsize=8,
                color="0.2")
    off = [f"{m} {v:.3g}" for m, v in sorted(base.items(), key=lambda kv: kv[1])
           if not (math.isfinite(v) and v <= cutoff)]
    if off:
        ax.text(1.01, 1.0, "off scale:\n" + "\n".join(off), transform=ax.transAxes, va="top",
                fontsize=8, color="0.2")


def _finish(ax: Any, fig: Any) -> None:
    """Common look: integer x ticks (generations, node counts), grid, legend off the curves."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.subplots_adjust(right=0.8)


def save_png(fig: Any, path: Path, **savefig: Any) -> None:
    """Render with Agg (no display, no pyplot global state) and replace the file atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, **savefig))


def plot_fitness(history: list[dict[str, str]], base: dict[str, float], reference: str,
                 path: Path, combine: str = "mean") -> None:
    """Best and median fitness per generation, the polish step as its own marker, baselines."""
    from matplotlib.figure import Figure

    rows = [(int(_float(r["generation"])), _float(r["best"]), _float(r["median"]),
             r.get("polish", "0").strip() in ("1", "True", "true")) for r in history]
    gen = [(g, b, m) for g, b, m, p in rows if not p]
    pol = [(g, b) for g, b, _, p in rows if p and math.isfinite(b)]
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    core = [r[1] for r in gen] + [b for _, b in pol] + [base.get(reference, 1.0)]
    lo, hi, cutoff = _limits(core, [r[2] for r in gen] + list(base.values()))
    for idx, (label, style) in ((1, ("best", "-o")), (2, ("median", "--s"))):
        pts = [(r[0], r[idx]) for r in gen if math.isfinite(r[idx])]
        hidden = sum(v > hi for _, v in pts)
        if pts:
            ax.plot(*zip(*pts), style, ms=4,
                    label=label + (f" ({hidden} above the plot)" if hidden else ""))
    if pol:
        ax.plot(*zip(*pol), "*", ms=14, color="crimson", label="polish (best)", zorder=5)
    ax.set_ylim(lo, hi)
    _draw_baselines(ax, base, cutoff)
    ax.set_xlabel("generation")
    ax.set_ylabel("fitness")
    ax.set_title(FITNESS_MEANING[combine].format(ref=reference), fontsize=10)
    _finish(ax, fig)
    save_png(fig, path)


def plot_front(points: list[tuple[int, float]], base: dict[str, float], reference: str,
               path: Path, combine: str = "mean") -> None:
    """Every valid evaluated metric by size and fitness, with the Pareto front as a step line."""
    from matplotlib.figure import Figure

    front = pareto_front(points)
    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    core = [f for _, f in front] + [base.get(reference, 1.0)]
    lo, hi, cutoff = _limits(core, [f for _, f in points] + list(base.values()))
    hidden = sum(f > hi for _, f in points)
    ax.scatter(*zip(*points), s=10, alpha=0.45, label=f"evaluated ok ({len(points)}"
               + (f", {hidden} above the plot)" if hidden else ")"))
    # the front holds up to the largest evaluated size: nothing bigger beat its last point
    front = front + [(max(s for s, _ in points), front[-1][1])]
    ax.step(*zip(*front), where="post", color="crimson", lw=1.5, marker="o", ms=4,
            label="Pareto front")
    ax.set_ylim(lo, hi)
    _draw_baselines(ax, base, cutoff)
    ax.set_xlabel("size (tree nodes)")
    ax.set_ylabel("fitness")
    ax.set_title("size vs " + FITNESS_MEANING[combine].format(ref=reference), fontsize=10)
    _finish(ax, fig)
    save_png(fig, path)


# ----------------------------------------------------------------------------- report
def _fmt(x: float, digits: int = 4) -> str:
    return "inf" if x == math.inf else "-" if not math.isfinite(x) else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(r) + " |" for r in rows] + [""]


def _baseline_summary(rows: list[dict[str, str]]) -> list[list[str]]:
    """metric x task x phase: mean ± std of ppl over seeds (the spread calibration seeds add)."""
    groups = grouped(rows, lambda r: (r.get("metric") or "?", r.get("task") or "?",
                                      r.get("phase") or "?"), lambda r: _float(r.get("ppl")))
    out = []
    order = {"fitness": 0, "selection": 1, "report": 2}  # the order a run measures them in
    for (m, t, p), v in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                order.get(kv[0][2], 3), kv[0][2])):
        sd = statistics.stdev(v) if len(v) > 1 and all(map(math.isfinite, v)) else 0.0
        out.append([m, t, p, f"{_fmt(statistics.fmean(v), 3)} ± {_fmt(sd, 3)}", str(len(v))])
    return out


DAMAGE = (ValueError, KeyError, TypeError, AttributeError, OverflowError, ZeroDivisionError,
          IndexError)
"""What hand-edited or damaged run files raise here (the files are ours, their values are not)."""


def _section(build: Any, source: str) -> list[str]:
    """One part of report.md; a damaged file costs its own part only, and report.md says so."""
    try:
        return build()
    except DAMAGE as exc:
        return [f"_skipped: {source} is damaged ({type(exc).__name__}: {str(exc)[:200]})._", ""]


def write_report(run_dir: Path, out_dir: Path | None = None) -> Path:
    """Write fitness.png, front.png and report.md for `run_dir` into `out_dir` (default the run
    dir); returns the path of report.md."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist")
    if not any((run_dir / name).is_file() for name in (HISTORY, EVALUATIONS, CONFIG)):
        raise ConfigError(f"{run_dir} is not a search run: it has no config.json, history.csv "
                          "or evaluations.jsonl")
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("pruner-zero report needs matplotlib: pip install 'pruner-zero[plot]'")
    out_dir = check_writable_dir(Path(out_dir) if out_dir is not None else run_dir, "--out")
    run = _read_run(run_dir, out_dir)
    md = _head(run)
    if run.hof:
        md += _section(lambda: _hall_of_fame(run), HALL_OF_FAME)
    md += ["## Fitness per generation", ""]
    md += _section(lambda: _fitness(run), HISTORY) if run.history else \
        ["_history.csv missing: no fitness plot or history table._", ""]
    md += ["## Size vs fitness", ""]
    md += _section(lambda: _front(run), EVALUATIONS) if run.evals is not None else \
        ["_evaluations.jsonl missing: no front plot._", ""]
    md += ["## Baselines", ""]
    md += _section(lambda: _baseline_tables(run), BASELINES) \
        if run.baselines else ["_baselines.csv missing: no baseline lines or table._", ""]
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(md))
    return path


@dataclass
class _Run:
    """What a report reads of a run directory (None or empty: missing or unreadable)."""

    path: Path
    out_dir: Path
    config: dict[str, Any]
    reference: str
    history: list[dict[str, str]] | None
    evals: tuple[list[dict[str, Any]], int] | None
    baselines: list[dict[str, str]] | None
    base: dict[str, float]
    hof: list[dict[str, str]] | None
    combine: str = "mean"  # config.json's fitness.task_combine


def _read_run(run_dir: Path, out_dir: Path) -> _Run:
    try:
        config = json.loads((run_dir / CONFIG).read_text(encoding="utf-8-sig"))
        config = config if isinstance(config, dict) else {}
    except (OSError, ValueError, RecursionError):
        config = {}
    reference = str(config.get("reference") or "wanda")
    fitness = config.get("fitness") if isinstance(config.get("fitness"), dict) else {}
    combine = fitness.get("task_combine")
    combine = combine if combine in FITNESS_MEANING else "mean"
    baselines = _read_csv(run_dir / BASELINES)
    base: dict[str, float] = {}
    try:
        weights = {t["name"]: _float(t.get("weight", 1.0)) for t in config.get("tasks") or []
                   if isinstance(t, dict) and "name" in t}
        base = baseline_fitness(baselines or [], reference, weights, combine=combine)
    except DAMAGE:
        pass  # the baselines section says what is wrong
    return _Run(run_dir, out_dir, config, reference, _read_csv(run_dir / HISTORY),
                read_evaluations(run_dir / EVALUATIONS), baselines, base,
                _read_csv(run_dir / HALL_OF_FAME), combine)


def _head(run: _Run) -> list[str]:
    md = ["# Search run report", "", f"Run directory: `{run.path.resolve()}`", "",
          FITNESS_MEANING[run.combine].format(ref=run.reference) + ".", ""]
    if not run.config:
        md += ["_config.json missing or unreadable: reference assumed to be wanda, "
               "task weights 1._", ""]
    md += ["## Best metric", ""]
    best_txt = run.path / BEST_TXT
    if best_txt.is_file():
        md += ["```", best_txt.read_text(encoding="utf-8", errors="replace").rstrip(), "```", ""]
    else:
        md += ["_best_metric.txt missing (run not finished?)._", ""]
    return md


def _hall_of_fame(run: _Run) -> list[str]:
    return ["Hall of fame, top 5:", ""] + _table(
        ["rank", "fitness", "formula"],
        [[r.get("rank", ""), _fmt(_float(r.get("fitness"))), f"`{r.get('formula', '')}`"]
         for r in (run.hof or [])[:5]])


def _fitness(run: _Run) -> list[str]:
    plot_fitness(run.history or [], run.base, run.reference, run.out_dir / "fitness.png",
                 run.combine)
    return ["![fitness per generation](fitness.png)", ""] + _table(
        ["generation", "best", "median", "valid/evaluated", "cache hits", "seconds"], [
            [r["generation"] + (" (polish)" if r.get("polish", "0").strip() == "1" else ""),
             _fmt(_float(r.get("best"))), _fmt(_float(r.get("median"))),
             f"{r.get('valid', '?')}/{r.get('evaluated', '?')}", r.get("cached", "?"),
             _fmt(_float(r.get("seconds")), 1)] for r in run.history or []])


def _front(run: _Run) -> list[str]:
    records, bad = run.evals or ([], 0)
    points = []
    for e in records:
        fit = _float(e.get("fitness"))
        if e.get("status") == "ok" and math.isfinite(fit):
            size = e.get("size")
            points.append((int(size) if isinstance(size, (int, float))
                           else formula_size(str(e.get("formula", ""))), fit))
    statuses = {s: sum(e.get("status") == s for e in records)
                for s in sorted({str(e.get("status")) for e in records})}
    lines = [f"{len(records)} evaluations: " + ", ".join(f"{n} {s}" for s, n in statuses.items())
             + (f"; {bad} unreadable lines skipped" if bad else "") + ".", ""]
    if not points:
        return lines + ["_no valid evaluation: no front plot._", ""]
    plot_front(points, run.base, run.reference, run.out_dir / "front.png", run.combine)
    return lines + ["![size vs fitness](front.png)", ""]


def _baseline_tables(run: _Run) -> list[str]:
    lines = []
    if run.base:
        lines += [f"Fitness of each baseline on the fitness windows (reference {run.reference}):",
                  ""]
        lines += _table(["metric", "fitness"], [[m, _fmt(v)] for m, v in sorted(run.base.items())])
    lines += ["Perplexity, mean ± std over seeds:", ""]
    return lines + _table(["metric", "task", "phase", "ppl", "seeds"],
                          _baseline_summary(run.baselines or []))
