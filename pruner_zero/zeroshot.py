"""Zero-shot accuracy through lm-eval (the optional extra `pruner-zero[zeroshot]`), the second
half of the results tables of Wanda, SparseGPT and Pruner-Zero.

The model is scored in memory (lm-eval's HFLM wraps the loaded, pruned model: no save and
reload). Tasks are lm-eval's own (boolq, rte, hellaswag, winogrande, arc_easy, arc_challenge,
openbookqa, ...) or task YAML files in `include` directories; names are checked before any long
work. lm-eval is imported only when tasks are asked for.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, describe

PAPER_TASKS = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
"""The seven tasks of the Wanda and Pruner-Zero zero-shot tables."""
METRICS = ("acc", "acc_norm")


def parse_tasks(spec: str | Sequence[str] | None) -> list[str]:
    """`boolq,rte` -> ['boolq', 'rte']; `paper` is the seven tasks of the papers' tables."""
    if spec is None:
        return []
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    if not items or any(not isinstance(i, str) or not i for i in items):
        raise ConfigError(f"--tasks takes lm-eval task names separated by commas, got {spec!r}")
    out: list[str] = []
    for item in items:
        for name in PAPER_TASKS if item == "paper" else (item,):
            if name not in out:
                out.append(name)
    return out


def task_manager(tasks: Sequence[str], include: Sequence[str] = ()) -> Any:
    """lm-eval's task index (built-in tasks and `include` directories), after checking that it
    knows every name in `tasks`: a misspelt task fails before the model is pruned."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise ConfigError("--tasks needs lm-eval, an optional extra: pip install "
                          "'pruner-zero[zeroshot]' (or pip install lm-eval)") from None
    for d in include:
        if not Path(d).is_dir():
            raise ConfigError(f"--tasks-include {d}: not a directory of lm-eval task YAML files")
    manager = TaskManager(include_path=[str(d) for d in include] or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        broken = _unparsable_yaml(include)
        raise ConfigError(f"lm-eval knows no task {', '.join(unknown)} (see `lm-eval ls tasks`; "
                          "local task YAML files: --tasks-include DIR)"
                          + (f"; these task files do not parse: {'; '.join(broken)}"
                             if broken else ""))
    if include:
        _refuse_shadowing(tasks, manager, include)
    _build_tasks(tasks, manager)
    return manager


def task_sources(tasks: Sequence[str], manager: Any) -> dict[str, str | None]:
    """The YAML file lm-eval defines each task by (a report records which one was used)."""
    index = getattr(manager, "task_index", {}) or {}

    def path(entry: Any) -> str | None:  # an Entry record, or a dict in older lm-eval
        found = entry.get("yaml_path") if isinstance(entry, dict) else \
            getattr(entry, "yaml_path", None)
        return None if found in (None, -1) else str(found)
    return {t: path(index.get(t)) for t in tasks}


def _local(path: str | None, include: Sequence[str]) -> bool:
    if path is None:
        return False
    p = Path(path).resolve()
    return any(Path(d).resolve() in p.parents for d in include)


def _refuse_shadowing(tasks: Sequence[str], manager: Any, include: Sequence[str]) -> None:
    """A local task named like one of lm-eval's own would silently replace it: refused."""
    local = [t for t, path in task_sources(tasks, manager).items() if _local(path, include)]
    if not local:
        return
    builtin = _builtin_task_names()
    clash = [t for t in local if t in builtin]
    if clash:
        raise ConfigError(f"--tasks-include defines {', '.join(clash)}, which lm-eval also "
                          "defines: the local file would silently replace it; give the local "
                          "task another name")


def _builtin_task_names() -> set[str]:
    """The `task:` names in lm-eval's own YAML files (a scan: its index takes ~40 s to build)."""
    import re
    import lm_eval.tasks

    pattern = re.compile(r"^task:\s*['\"]?([^'\"\s#]+)", re.M)
    names: set[str] = set()
    for path in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml"):
        try:
            names.update(pattern.findall(path.read_text(encoding="utf-8", errors="replace")))
        except OSError:
            continue
    return names


def _unparsable_yaml(include: Sequence[str]) -> list[str]:
    """Task files in the include directories that are not YAML (lm-eval skips them quietly);
    its own tags (!function) are allowed."""
    import yaml

    class Tolerant(yaml.SafeLoader):
        pass

    Tolerant.add_multi_constructor("!", lambda loader, suffix, node: None)
    out = []
    for d in include:
        for path in sorted(Path(d).rglob("*.yaml")):
            try:
                yaml.load(path.read_text(encoding="utf-8"), Loader=Tolerant)  # noqa: S506
            except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
                out.append(f"{path} ({' '.join(str(exc).split())[:160]})")
    return out


def _build_tasks(tasks: Sequence[str], manager: Any) -> None:
    """Each task built as lm-eval will build it (its data loaded, its !function imported), so
    that a broken task fails before the model is pruned, not after."""
    from lm_eval.tasks import get_task_dict

    for t in tasks:
        try:
            manager.load([t]) if hasattr(manager, "load") else get_task_dict([t], manager)
        except Exception as exc:  # lm-eval and datasets raise many kinds on a broken task
            raise ConfigError(f"lm-eval task {t} cannot be built: {describe(exc)}") from None


def zero_shot(model: Any, tokenizer: Any, tasks: Sequence[str], manager: Any,
              batch_size: int = 8, limit: int | None = None) -> dict[str, dict[str, float | None]]:
    """Accuracy (and length-normalised accuracy where the task has it) with their standard
    errors, per task, of `model` as it is now; `limit` examples per task (None: all)."""
    import logging

    import lm_eval
    from lm_eval.models.huggingface import HFLM

    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its notes on being handed a loaded model are what we meant
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager,
                                          num_fewshot=0, limit=limit, log_samples=False)
    except Exception as exc:  # a task's data or code failing mid-way: one line, not a traceback
        raise ConfigError(f"lm-eval failed on {', '.join(tasks)}: {describe(exc)}") from None
    finally:
        quiet.setLevel(level)
    out: dict[str, dict[str, float | None]] = {}
    for task in tasks:
        found = results["results"].get(task, {})
        row: dict[str, float | None] = {}
        for metric in METRICS:
            if f"{metric},none" in found:
                row[metric] = _number(found[f"{metric},none"])
                row[f"{metric}_stderr"] = _number(found.get(f"{metric}_stderr,none"))
        if not row:
            raise ConfigError(f"lm-eval task {task} reports no accuracy (its metrics: "
                              f"{', '.join(k for k in found if ',' in k) or 'none'}); zero-shot "
                              "here means multiple-choice tasks scored by acc")
        row["samples"] = results.get("n-samples", {}).get(task, {}).get("effective")
        out[task] = row
    return out


def _number(value: Any) -> float | None:
    """lm-eval writes 'N/A' for a stderr it could not compute."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def summary_table(columns: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """One markdown table: a row per task, a column per model (e.g. dense, pruned), each cell
    accuracy ± its standard error in percent, and the mean accuracy over the tasks last."""
    names = list(columns)
    tasks = list(dict.fromkeys(t for col in columns.values() for t in col))
    lines = ["| task | " + " | ".join(f"{n} acc (%)" for n in names) + " |",
             "|---|" + "---|" * len(names)]

    def cell(row: dict[str, float | None] | None) -> str:
        if not row or row.get("acc") is None:
            return "-"
        se = row.get("acc_stderr")
        return f"{100 * row['acc']:.2f}" + ("" if se is None else f" ± {100 * se:.2f}")

    for t in tasks:
        lines.append(f"| {t} | " + " | ".join(cell(columns[n].get(t)) for n in names) + " |")
    means = []
    for n in names:
        accs = [columns[n][t]["acc"] for t in tasks if columns[n].get(t, {}).get("acc") is not None]
        means.append(f"{100 * sum(accs) / len(accs):.2f}" if accs and len(accs) == len(tasks) else "-")
    lines.append("| mean | " + " | ".join(means) + " |")
    return "\n".join(lines)


class ZeroShot:
    """The zero-shot part of a prune or eval: lm-eval tasks, checked before any work, then
    measured on the model as it is at each call (dense, pruned), in memory."""

    def __init__(self, tasks: list[str], manager, limit: int | None,
                 include: Sequence[str] = ()) -> None:
        self.tasks, self.manager, self.limit = tasks, manager, limit
        self.include = [str(d) for d in include]
        self.results: dict[str, dict] = {}

    @classmethod
    def checked(cls, tasks, include=(), limit: int | None = None) -> "ZeroShot":
        names = parse_tasks(tasks)
        if isinstance(include, str):
            include = [include]
        if names and limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                                            or limit < 1):
            raise ConfigError(f"--tasks-limit must be a positive integer, got {limit!r}")
        if not names and (include or limit is not None):
            raise ConfigError("--tasks-include and --tasks-limit need --tasks")
        return cls(names, task_manager(names, list(include)) if names else None, limit, include)

    def measure(self, bench, label: str, log=print) -> None:
        if not self.tasks:
            return
        log(f"zero-shot ({label}): {', '.join(self.tasks)}"
            + ("" if self.limit is None else f", {self.limit} examples each"))
        self.results[label] = zero_shot(bench.model, bench.tokenizer, self.tasks, self.manager,
                                        bench.protocol.batch_size, self.limit)

    def as_dict(self) -> dict:
        return {"tasks": self.tasks, "limit": self.limit, "num_fewshot": 0,
                "include": self.include,
                "sources": task_sources(self.tasks, self.manager) if self.manager else {},
                "results": self.results}
