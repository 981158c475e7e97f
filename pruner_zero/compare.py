"""`pruner-zero compare`: a leaderboard of pruning metrics x tasks on the report split.

Every metric is measured on every task for several calibration seeds (the task's seed and the
next ones); each cell is the perplexity's mean ± sample std over those seeds. The dense model's
perplexity (one value: it needs no calibration) is the first row. A cell within the seed spread
of the best cell of its task (``spread.verdict`` says ``tie``) is marked as a tie: the
difference is calibration noise, not a win.

Everything that can be wrong with the input (metrics, tasks, sparsity, splits, paths) is checked
before any model is loaded. Outputs: the markdown table (returned and printed by the CLI) and,
with ``out``, ``leaderboard.csv`` and ``leaderboard.png`` (the plot needs matplotlib).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, describe
from .files import atomic_write_text, check_writable_dir
from .measure import TaskBenches, grid
from .measurement import Measurement
from .methods import MetricSpec, resolve_metric_specs
from .metric.registry import statistics_read
from .metric.tree import leaves
from .recipe import PLAIN, Recipe
from .report import save_png
from .runtime import Runtime
from .search.options import MAX_SEEDS
from .sparsegpt import SPARSEGPT
from .spread import grouped, mean_std, verdict
from .tasks import Task, check_tasks, name_tasks
from .windows import window_budget, windows_note

CSV_NAME = "leaderboard.csv"
PNG_NAME = "leaderboard.png"
CSV_FIELDS = ["metric", "formula", "task", "split", "windows", "seeds", "ppl_mean", "ppl_std", "ppl_dense",
              "rel_dense", "per_seed"]
TIE_MARK = "≈"
PLOT_HINT = ("leaderboard.png skipped: the plot needs matplotlib "
             "(pip install 'pruner-zero[plot]'); leaderboard.csv was written")


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- measuring
def compare(metrics: str | Sequence[str], tasks: Sequence[Task], *, seeds: int = 3,
            compare: str = "row", runtime: Runtime | None = None,
            cache_dir: str | Path | None = None, out: str | Path | None = None,
            progress: bool = True, log: Callable[[str], None] = _stderr,
            allow_partial: bool = False, eval_windows: int | None = None,
            recipe: Recipe | None = None) -> dict[str, Any]:
    """Measure every metric on every task's report split over ``seeds`` calibration seeds, on
    all its windows or ``eval_windows`` of them spread evenly (the same for every cell).
    ``recipe`` (allocation and update) applies to every metric but sparsegpt and recipe files,
    which bring their own; a metric pruned under a recipe is labelled with it.

    Returns ``{"markdown", "rows" (one per metric, task, seed), "summary" (the CSV rows),
    "dense" (task -> ppl), "metrics", "tasks", "seeds", "files"}``; with ``out`` writes
    leaderboard.csv and (with matplotlib) leaderboard.png there.
    """
    if isinstance(tasks, Task) or not all(isinstance(t, Task) for t in tasks):
        raise ConfigError("tasks must be a list of Task (pruner_zero.tasks.Task), e.g. "
                          "[Task(model='...', sparsity=0.5)]")
    eval_windows = window_budget(eval_windows, "--eval-windows")
    if runtime is not None and not isinstance(runtime, Runtime):
        raise ConfigError(f"runtime must be a pruner_zero.runtime.Runtime, got {runtime!r}")
    specs = _with_recipes(resolve_metric_specs(metrics), (recipe or PLAIN).checked())
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds must be an integer from 1 to {MAX_SEEDS}, got {seeds!r}")
    task_list = _checked_tasks(tasks, compare)
    out_dir = None if out is None else check_writable_dir(out, "--out")

    needed = statistics_read(set().union(*(leaves(s.metric) for s in specs
                                           if s.metric != SPARSEGPT)))
    for s in specs:
        for t in task_list:
            try:
                s.recipe.allocation.check_fits(t.shape(compare))
            except ConfigError as exc:
                raise ConfigError(f"{s.label}: {exc}") from None
    benches = TaskBenches(runtime or Runtime(), None if cache_dir is None else Path(cache_dir),
                          progress, log, needed=needed)
    benches.prepare(task_list, compare, "report_split", allow_partial=allow_partial)
    dense = _dense_ppls(benches, task_list, eval_windows)
    log(f"measuring {len(specs)} metrics x {len(task_list)} tasks x {seeds} calibration seeds "
        "on the report split")
    rows = grid(benches, [(m.label, m.metric, m.recipe) for m in specs], task_list, seeds,
                lambda t: t.report_split, compare=compare, progress=progress, budget=eval_windows)
    formulas = {m.label: m.formula for m in specs}
    rows = [replace(r, formula=formulas[r.metric]) for r in rows]
    summary = summarize(rows, specs, task_list, dense, seeds)
    result: dict[str, Any] = {
        "markdown": markdown_table(summary, task_list, seeds, eval_windows),
        "rows": [r.as_dict() for r in rows], "summary": summary, "dense": dense, "seeds": seeds,
        "metrics": [{"label": m.label, "formula": m.formula} for m in specs],
        "tasks": [t.as_dict() for t in task_list], "files": {}}
    if out_dir is not None:
        result["files"] = write_leaderboard(summary, task_list, seeds, out_dir, log)
    return result


def _with_recipes(specs: Sequence[MetricSpec], recipe: Recipe) -> list[MetricSpec]:
    """Each metric with the recipe it is pruned under (labelled with it when not plain)."""
    out = []
    for m in specs:
        own = PLAIN if m.metric == SPARSEGPT else m.recipe or recipe
        label = m.label if own.plain else f"{m.label} [{own.describe()}]"
        out.append(replace(m, label=label, recipe=own))
    return out


def _checked_tasks(tasks: Sequence[Task], compare: str) -> list[Task]:
    """The tasks named, every task's option errors before any task's path errors."""
    task_list = name_tasks(list(tasks))
    for t in task_list:
        try:
            t.shape(compare)
        except ConfigError as exc:
            raise ConfigError(f"task {t.name}: {exc}") from None
    check_tasks(task_list, compare, selection=False)  # compare selects nothing
    return task_list


def _dense_ppls(benches: TaskBenches, tasks: Sequence[Task],
                eval_windows: int | None) -> dict[str, float]:
    """task -> the dense model's perplexity; tasks differing only in sparsity share one."""
    dense: dict[str, float] = {}
    shared: dict[tuple, float] = {}
    for t in tasks:
        b = benches.bench(t)
        key = (b.protocol.model, b.protocol.data_dir, b.protocol.seqlen, t.report_split)
        if key not in shared:
            shared[key] = benches.dense_ppl(t, t.report_split, eval_windows)
        dense[t.name] = shared[key]
    return dense


def write_leaderboard(summary: Sequence[dict[str, Any]], tasks: Sequence[Task], seeds: int,
                      out_dir: Path, log: Callable[[str], None]) -> dict[str, str]:
    """leaderboard.csv, then leaderboard.png (with matplotlib): a plot never costs the CSV."""
    files = {}
    csv_path = out_dir / CSV_NAME
    atomic_write_text(csv_path, leaderboard_csv(summary))
    files["csv"] = str(csv_path)
    if importlib.util.find_spec("matplotlib") is None:
        log(PLOT_HINT)
        return files
    png_path = out_dir / PNG_NAME
    try:
        plot_leaderboard(summary, tasks, seeds, png_path)
    except Exception as exc:  # matplotlib raises many kinds on odd labels and fonts
        log(f"leaderboard.png skipped: the plot failed ({describe(exc)}); {CSV_NAME} was written")
    else:
        files["png"] = str(png_path)
    return files


def summarize(rows: Sequence[Measurement], specs: Sequence[MetricSpec],
              tasks: Sequence[Task], dense: dict[str, float], seeds: int) -> list[dict[str, Any]]:
    """One record per (metric, task), metrics in the given order: mean ± std over seeds, the
    per-seed values in seed order, relative to dense, and ``best``/``tie`` flags per task."""
    by = grouped(rows, lambda r: (r.metric, r.task), lambda r: (r.seed, r.ppl))
    windows = {r.task: r.windows for r in rows}
    out = []
    for m in specs:
        for t in tasks:
            pairs = sorted(by.get((m.label, t.name), []))
            values = [p for _, p in pairs]
            mean, std = mean_std(values)
            d = dense[t.name]
            rel = mean / d if d > 0 and math.isfinite(d) else math.inf
            out.append({"metric": m.label, "formula": m.formula, "task": t.name,
                        "split": t.report_split, "windows": windows.get(t.name),
                        "seeds": [s for s, _ in pairs],
                        "ppl_mean": mean, "ppl_std": std, "ppl_dense": d, "rel_dense": rel,
                        "per_seed": values, "best": False, "tie": False})
    for t in tasks:
        cells = [c for c in out if c["task"] == t.name and math.isfinite(c["ppl_mean"])]
        if not cells:
            continue
        best = min(cells, key=lambda c: c["ppl_mean"])
        best["best"] = True
        for c in cells:
            if c is not best and verdict(c["per_seed"], best["per_seed"]) == "tie":
                c["tie"] = True
    return out


# ----------------------------------------------------------------------------- outputs
def _num(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if math.isfinite(x) else ("inf" if x > 0 else "nan")


def _md(text: str) -> str:
    """A table cell: pipes escaped so a label cannot break the table."""
    return text.replace("|", "\\|")


def markdown_table(summary: Sequence[dict[str, Any]], tasks: Sequence[Task], seeds: int,
                   budget: int | None = None) -> str:
    """Rows = dense + metrics, columns = tasks; legend lines below."""
    names = [t.name for t in tasks]
    header = ["metric", *[_md(n) for n in names]]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(names)]
    dense = {c["task"]: c["ppl_dense"] for c in summary}
    lines.append("| dense | " + " | ".join(_num(dense.get(n, math.nan)) for n in names) + " |")
    metrics = list(dict.fromkeys(c["metric"] for c in summary))
    cell = {(c["metric"], c["task"]): c for c in summary}
    for m in metrics:
        parts = []
        for n in names:
            c = cell[(m, n)]
            text = f"{_num(c['ppl_mean'])} ± {_num(c['ppl_std'])}"
            if c["best"]:
                text = f"**{text}**"
            elif c["tie"]:
                text = f"{text} {TIE_MARK}"
            parts.append(text)
        lines.append(f"| {_md(m)} | " + " | ".join(parts) + " |")
    splits = list(dict.fromkeys(t.report_split for t in tasks))
    where = (f"the report split ({splits[0]})" if len(splits) == 1 else
             "each task's report split (" + ", ".join(f"{t.name}: {t.report_split}"
                                                      for t in tasks) + ")")
    counts = {c["task"]: c.get("windows") for c in summary}
    if len(set(counts.values())) == 1 and None not in counts.values():
        where += ": " + windows_note("it", budget, next(iter(counts.values())))
    else:
        where += ": " + ", ".join(f"{n}: {counts.get(n)} windows" for n in names) + \
            (f" ({budget} spread evenly, or all where fewer)" if budget else " (all)")
    lines += ["",
              f"Perplexity on {where}, mean ± std over {seeds} calibration seed"
              f"{'s' if seeds != 1 else ''} (the task's seed and the next); lower is better; "
              f"dense = the unpruned model. **Bold** = lowest mean of the task; "
              f"{TIE_MARK} = a tie with it: the means differ by no more than the larger seed "
              "std of the two, so the difference is calibration noise."]
    return "\n".join(lines)


def _csv_num(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else str(float(x))


def leaderboard_csv(summary: Sequence[dict[str, Any]]) -> str:
    """CSV text; ``seeds`` and ``per_seed`` are semicolon-joined in the same (seed) order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in summary:
        writer.writerow({
            "metric": c["metric"], "formula": c["formula"], "task": c["task"], "split": c["split"],
            "windows": c.get("windows", ""),
            "seeds": ";".join(str(s) for s in c["seeds"]), "ppl_mean": _csv_num(c["ppl_mean"]),
            "ppl_std": _csv_num(c["ppl_std"]), "ppl_dense": _csv_num(c["ppl_dense"]),
            "rel_dense": _csv_num(c["rel_dense"]),
            "per_seed": ";".join(_csv_num(v) for v in c["per_seed"])})
    return buf.getvalue()


def _plain(text: str) -> str:
    """A label matplotlib draws as typed: `$` would start its math mode."""
    return text.replace("$", r"\$")


def _wrap(label: str, width: int = 22) -> str:
    """Long formulas on several lines, broken after commas."""
    if len(label) <= width:
        return _plain(label)
    lines, cur = [], ""
    for part in label.replace(", ", ",").split(","):
        piece = part if not cur else "," + part
        if cur and len(cur) + len(piece) > width:
            lines.append(cur + ",")
            cur = part
        else:
            cur += piece
    lines.append(cur)
    return _plain("\n".join(lines))


def plot_leaderboard(summary: Sequence[dict[str, Any]], tasks: Sequence[Task], seeds: int,
                     path: Path) -> None:
    """Grouped bars: ppl / dense ppl (mean over seeds, std as error bars) per metric (groups)
    and task (bars). Bars start at the dashed line 1.0 (= dense): up is worse than dense, down
    better; the y range fits the data, on a log scale when the ratios span a wide range."""
    from matplotlib.figure import Figure

    metrics = list(dict.fromkeys(c["metric"] for c in summary))
    cell = {(c["metric"], c["task"]): c for c in summary}
    n_t = max(len(tasks), 1)
    width = 0.8 / n_t
    fig = Figure(figsize=(max(6.0, 1.5 + len(metrics) * (0.45 * n_t + 0.6)), 4.8))
    ax = fig.add_subplot()
    ok = [c for c in summary if math.isfinite(c["rel_dense"]) and c["rel_dense"] > 0]
    lows = [c["rel_dense"] - c["ppl_std"] / c["ppl_dense"] for c in ok] + [1.0]
    highs = [c["rel_dense"] + c["ppl_std"] / c["ppl_dense"] for c in ok] + [1.0]
    positive = [v for v in lows if v > 0]
    log_scale = max(highs) / min(positive) > 30
    for j, t in enumerate(tasks):
        xs, ys, errs, missing = [], [], [], []
        for i, m in enumerate(metrics):
            c = cell[(m, t.name)]
            x = i - 0.4 + width * (j + 0.5)
            if math.isfinite(c["rel_dense"]) and c["rel_dense"] > 0:
                xs.append(x)
                ys.append(c["rel_dense"])
                errs.append(c["ppl_std"] / c["ppl_dense"])
            else:
                missing.append(x)
        color = f"C{j % 10}"
        bars = ax.bar(xs, [y - 1.0 for y in ys], width * 0.92, bottom=1.0, color=color,
                      label=_plain(t.name), zorder=2)
        ax.errorbar(xs, ys, yerr=errs, fmt="none", ecolor="0.15", elinewidth=1, capsize=3,
                    zorder=3)
        ax.bar_label(bars, labels=[f"{y:.3g}" for y in ys], fontsize=7, padding=2)
        for x in missing:
            ax.text(x, 1.0, "inf", ha="center", va="bottom", fontsize=8, color="crimson")
    ax.axhline(1.0, color="black", lw=1, ls="--", zorder=4, label="dense (= 1)")
    if log_scale:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 1.3, max(highs) * 1.3)
    else:
        pad = 0.12 * max(max(highs) - min(lows), 1e-3)
        ax.set_ylim(max(min(lows) - pad, 0.0), max(highs) + pad)
    ax.set_xticks(range(len(metrics)))
    ax.set_xticklabels([_wrap(m) for m in metrics], fontsize=8)
    ax.set_xlim(-0.6, len(metrics) - 0.4)
    ax.set_ylabel("ppl / dense ppl" + (" (log scale)" if log_scale else ""))
    splits = sorted({_plain(t.report_split) for t in tasks})
    ax.set_title(f"Perplexity relative to the dense model on the report split ({', '.join(splits)})"
                 f"\nmean ± std over {seeds} calibration seed{'s' if seeds != 1 else ''}; "
                 "bars start at dense = 1; lower is better", fontsize=10)
    ax.grid(axis="y", alpha=0.3, zorder=0)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="task",
              title_fontsize=8)
    save_png(fig, path, bbox_inches="tight")
