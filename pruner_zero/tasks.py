"""Tasks: what one search (or ``compare``) measures a metric on, checked before any model loads.

A task is a model + data + the three data roles (calibration, selection, report) + sparsity and
structure, with a weight in the fitness. ``search --tasks tasks.yaml`` lists them; repeated
``--model`` and a list ``--sparsity 0.6,0.7`` give their cross product.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .data import (HUB_SPLITS, check_calib_data, check_text_join, resolve_calib_data,
                   resolve_data_dir)
from .engine import check_calibration
from .errors import ConfigError, DataError
from .files import looks_like_path, read_yaml, user_path
from .masks import Structure, check_fits, parse_structure
from .sampling import Sampling

TASK_KEYS = ("model", "data_dir", "calib_split", "fitness_split", "report_split", "nsamples",
             "seqlen", "seed", "sparsity", "structure", "calibration", "calib_data", "text_join",
             "weight")
"""Keys a task of tasks.yaml may set: the flag names with underscores."""
SPLIT_ALIASES = {"validation": "valid"}
"""The hub's split names that read the same text as a local split (data.load_split_text)."""


@dataclass(frozen=True)
class Task(Sampling):
    """A model and its calibration (``Sampling``), the splits that select and report, the
    sparsity pattern and the task's weight in the fitness."""

    fitness_split: str = "valid"
    report_split: str = "test"
    sparsity: float | None = None
    structure: str = "unstructured"
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        check_calibration(self.calibration)
        self.check_sampling(f"task {self.name or self.model}: ")
        for name in ("sparsity", "weight"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f"task {self.name or self.model}: {name} must be a number, "
                                  f"got {value!r}")
        for role in ("calib_split", "fitness_split", "report_split"):  # one name per split
            value = getattr(self, role)
            if value in SPLIT_ALIASES:
                object.__setattr__(self, role, SPLIT_ALIASES[value])

    def located(self) -> "Task":
        """The task with its local paths absolute, as a run stores it: a resume from another
        directory then reads the same files (a relative --calib-data read another file)."""
        changes: dict[str, Any] = {}
        if user_path(self.model).exists():
            changes["model"] = str(user_path(self.model).resolve())
        if self.data_dir is not None and user_path(self.data_dir).is_dir():
            changes["data_dir"] = str(user_path(self.data_dir).resolve())
        if self.calib_data is not None:
            changes["calib_data"] = resolve_calib_data(self.calib_data)
        return replace(self, **changes)

    def shape(self, compare: str = "row") -> Structure:
        return parse_structure(self.structure, self.sparsity, compare)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def default_name(task: Task) -> str:
    """A short readable name: model folder or hub id tail, and the sparsity pattern."""
    model = Path(task.model.rstrip("/")).name or task.model
    shape = task.structure if task.structure != "unstructured" else \
        f"{0.5 if task.sparsity is None else task.sparsity:g}"
    return f"{model}@{shape}"


def name_tasks(tasks: Sequence[Task]) -> list[Task]:
    """Give every task a unique name (``#2``, ``#3`` on repeats)."""
    out, seen = [], {}
    first: dict[tuple, int] = {}  # the same work twice would only double the cost
    for i, t in enumerate(tasks):  # one pass (pairs made a 2000-task file take a minute)
        work = tuple(getattr(t, f.name) for f in fields(t) if f.name != "name")
        j = first.setdefault(work, i)
        if j != i:
            raise ConfigError(f"tasks {j + 1} and {i + 1} are the same task "
                              f"({default_name(t)}); list each task once")
    for t in tasks:
        base = t.name or default_name(t)
        seen[base] = seen.get(base, 0) + 1
        out.append(replace(t, name=base if seen[base] == 1 else f"{base}#{seen[base]}"))
    return out


def parse_sparsities(spec: str | float | Sequence[float] | None) -> list[float | None]:
    """``0.6,0.7`` -> [0.6, 0.7]; None stays [None] (the structure's default)."""
    if spec is None:
        return [None]
    if isinstance(spec, (int, float)):
        return [float(spec)]
    if isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
        if any(not item for item in items):
            raise ConfigError(f"--sparsity {spec!r} has an empty item; give numbers separated by "
                              "single commas")
    else:
        items = list(spec)
    out = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"--sparsity takes numbers separated by commas, got {item!r}") from None
        out.append(value)
    if not out:
        raise ConfigError("--sparsity is empty")
    return out


def cross_tasks(models: Sequence[str], sparsities: Sequence[float | None], **common: Any) -> list[Task]:
    """The common case: every model at every sparsity, one set of options."""
    return [Task(model=m, sparsity=s, **common) for m in models for s in sparsities]


def load_tasks_file(path: str | Path, defaults: dict[str, Any]) -> list[Task]:
    """tasks.yaml: a list of mappings; omitted keys take ``defaults`` (the command line)."""
    raw = read_yaml(path, "--tasks")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"--tasks {path} must be a non-empty YAML list of tasks (mappings)")
    tasks = []
    for i, item in enumerate(raw, start=1):
        where = f"--tasks {path}, task {i}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: a task is a mapping of {', '.join(TASK_KEYS)}")
        unknown = sorted(str(k) for k in item if k not in TASK_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {', '.join(unknown)} "
                              f"(allowed: {', '.join(TASK_KEYS)})")
        merged = {**{k: v for k, v in defaults.items() if k in TASK_KEYS and v is not None}, **item}
        if not merged.get("model"):
            raise ConfigError(f"{where}: no model (give `model:` in the task or --model)")
        tasks.append(typed_task(merged, where))
    return tasks


def typed_task(d: dict[str, Any], where: str) -> Task:
    def as_int(key: str, minimum: int) -> int | None:
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ConfigError(f"{where}: {key} must be an integer >= {minimum}, got {v!r}")
        return v

    def as_str(key: str) -> str | None:
        v = d.get(key)
        if key == "structure" and isinstance(v, int) and not isinstance(v, bool):
            raise ConfigError(f"{where}: structure was read as the number {v}: YAML reads an "
                              "unquoted N:M as a number; quote it, e.g. structure: '2:4'")
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"{where}: {key} must be a string, got {v!r}")
        return v

    sparsity = d.get("sparsity")
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))):
        raise ConfigError(f"{where}: sparsity must be a number in (0, 1), got {sparsity!r}")
    weight = d.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
            math.isfinite(weight) and weight > 0):
        raise ConfigError(f"{where}: weight must be a positive number, got {weight!r}")
    if not WEIGHT_RANGE[0] <= weight <= WEIGHT_RANGE[1]:  # beyond, the weighted mean overflows
        raise ConfigError(f"{where}: weight must be between {WEIGHT_RANGE[0]:g} and "
                          f"{WEIGHT_RANGE[1]:g} (weights are relative: 3 and 1 weigh a task "
                          f"three times another), got {weight!r}")
    kwargs = {k: as_str(k) for k in ("model", "data_dir", "calib_split", "fitness_split",
                                      "report_split", "structure", "calibration", "calib_data",
                                      "text_join")
              if d.get(k) is not None}
    kwargs.update({k: as_int(k, m) for k, m in (("nsamples", 1), ("seqlen", 2), ("seed", 0))
                   if d.get(k) is not None})
    return Task(sparsity=None if sparsity is None else float(sparsity), weight=float(weight), **kwargs)


def model_widths(model: str) -> list[int] | None:
    """Input widths of the decoder linears from the model's config.json alone (no weights), or
    None when the config cannot be read here (a hub id offline): checked again after loading."""
    path = user_path(model) / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None  # the model loader names what is wrong with the file
    cfg = cfg.get("text_config", cfg) if isinstance(cfg, dict) else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("hidden_size"), int):
        return None
    hidden = cfg["hidden_size"]
    heads = cfg.get("num_attention_heads") or 1
    head_dim = cfg.get("head_dim") or hidden // heads
    widths = [hidden, heads * head_dim]
    if isinstance(cfg.get("intermediate_size"), int):
        widths.append(cfg["intermediate_size"])
    return widths


def check_tasks(tasks: Sequence[Task], compare: str = "row", selection: bool = True) -> None:
    """Everything that can be checked before a model is loaded, one clear error for the first
    problem: sparsity and structure, splits (report never used for selection, when the tasks
    select anything: ``selection``), N:M widths."""
    if not tasks:
        raise ConfigError("no task: give --model (repeatable) or --tasks tasks.yaml")
    text_id = _text_ids()
    for t in tasks:
        where = f"task {t.name or default_name(t)}"
        try:
            shape = t.shape(compare)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        report = text_id(t.data_dir, t.report_split)  # files, not spellings, are compared
        if selection and text_id(t.data_dir, t.fitness_split) == report:
            raise ConfigError(f"{where}: the selection split ({t.fitness_split}) must differ from "
                              f"the report split ({t.report_split}); a number is never reported "
                              "on the split it was chosen on")
        # compare too: statistics never see report text (a corpus reads no split)
        if t.calib_data is None and text_id(t.data_dir, t.calib_split) == report:
            raise ConfigError(f"{where}: the calibration split ({t.calib_split}) must differ from "
                              f"the report split ({t.report_split}): statistics of the report "
                              "text would reach the fitness")
        _check_split_files(t, where, selection)
        model_path = user_path(t.model)
        if not model_path.exists() and looks_like_path(t.model, hub_ids=True):
            raise ConfigError(f"{where}: model path not found: {t.model}")
        widths = model_widths(t.model)
        if widths is not None:
            try:
                check_fits(widths, shape)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
    if selection:
        check_roles_across(tasks, text_id)


def _text_ids() -> Callable[[str | None, str], tuple[str | None, str]]:
    """``_text_id`` remembered for one check (thousands of tasks share a few splits)."""
    known: dict[tuple[str | None, str], tuple[str | None, str]] = {}

    def text_id(data_dir: str | None, split: str) -> tuple[str | None, str]:
        if (data_dir, split) not in known:
            known[data_dir, split] = _text_id(data_dir, split)
        return known[data_dir, split]
    return text_id


def _text_id(data_dir: str | None, split: str) -> tuple[str | None, str]:
    """Which text a split of a task reads: (None, split) on the hub, else (the file, ""): roles
    compare files, so `./valid` or `sub/../valid` is the same text as `valid`."""
    split = SPLIT_ALIASES.get(split, split)
    try:
        local = resolve_data_dir(data_dir)
    except DataError:  # a missing directory is reported by the file checks
        local = None if data_dir is None else user_path(data_dir)
    if local is None:
        return None, split
    return str((local / f"{split}.txt").resolve()), ""


def check_roles_across(tasks: Sequence[Task], text_id: Callable | None = None) -> None:
    """No task's report text may be another task's calibration or selection text: it would
    reach the fitness through the other task."""
    used = {}
    text_id = text_id or _text_ids()
    for t in tasks:
        for role in ("calib_split", "fitness_split") if t.calib_data is None else ("fitness_split",):
            used.setdefault(text_id(t.data_dir, getattr(t, role)), (t, role))
    for t in tasks:
        hit = used.get(text_id(t.data_dir, t.report_split))
        if hit is not None:
            other, role = hit
            raise ConfigError(f"task {t.name or default_name(t)} reports on {t.report_split}, which "
                              f"task {other.name or default_name(other)} uses as its "
                              f"{'calibration' if role == 'calib_split' else 'selection'} split "
                              "(same data): the report text would reach the fitness")


def _check_split_files(t: Task, where: str, selection: bool) -> None:
    """A local data dir must hold every split a task reads; known before any model loads, so a
    misspelt report split does not fail after the whole search."""
    try:
        data_dir = resolve_data_dir(t.data_dir)
        check_text_join(t.text_join, data_dir)
        if t.calib_data is not None:
            check_calib_data(t.calib_data)
    except DataError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    roles = ("calib_split", "fitness_split", "report_split") if selection else \
        ("calib_split", "report_split")
    if t.calib_data is not None:  # calibration reads the corpus, not a split
        roles = roles[1:]
    for role in roles:
        split = getattr(t, role)
        if data_dir is None and split not in HUB_SPLITS:
            raise ConfigError(f"{where}: {role.replace('_', ' ')} {split!r} is not a WikiText-2 "
                              f"split on the hub ({', '.join(HUB_SPLITS)})")
        if data_dir is not None and not (data_dir / f"{split}.txt").is_file():
            raise ConfigError(f"{where}: {role.replace('_', ' ')} {split!r} not found: no "
                              f"{split}.txt in {data_dir}")


WEIGHT_RANGE = (1e-6, 1e6)
"""Task weights are relative; within this range their weighted mean of log-ratios stays finite
and every task still counts (1e308 on two tasks made every fitness 1.0 or not finite)."""


def geometric_fitness(ratios: Iterable[float], weights: Iterable[float]) -> float:
    """Weighted geometric mean of ppl / reference ppl: 0.98 is 2% better than the reference on
    average; inf when any ratio is inf (a task failed)."""
    num = den = 0.0
    for r, w in zip(ratios, weights):
        if not (r > 0 and math.isfinite(r)):
            return math.inf
        num += w * math.log(r)
        den += w
    return math.exp(num / den) if den > 0 else math.inf


def task_fitness(ratios: Iterable[float], weights: Iterable[float], combine: str = "mean"
                 ) -> float:
    """One fitness from the tasks' ppl / reference ppl: their weighted geometric mean, or the
    worst task's ratio (``combine`` "worst": weights do not apply); inf when any ratio is not
    finite (a task failed)."""
    if combine == "mean":
        return geometric_fitness(ratios, weights)
    if combine != "worst":
        raise ValueError(f"tasks combine by mean or worst, not {combine!r}")
    ratios = list(ratios)
    if not ratios or not all(r > 0 and math.isfinite(r) for r in ratios):
        return math.inf
    return max(ratios)


def build_tasks(model: Any = None, sparsity: Any = None, tasks: Any = None, *,
                structure: str = "unstructured", **protocol: Any) -> list[Any]:
    """The tasks of a search from ``--tasks`` (a YAML path or a list of mappings/Tasks) or from
    the cross product of models x sparsities; ``protocol`` gives every key a task omits."""
    common = {k: v for k, v in protocol.items() if k in TASK_KEYS and v is not None}
    common["structure"] = structure
    models = [model] if isinstance(model, str) else list(model or [])
    if tasks is not None:
        defaults = dict(common)
        if len(models) > 1:
            raise ConfigError("with --tasks, --model gives at most one default model; list the "
                              "models in the tasks file")
        if len(models) == 1:
            defaults["model"] = models[0]
        sparsities = parse_sparsities(sparsity)
        if len(sparsities) > 1:
            raise ConfigError("with --tasks, --sparsity gives one default value; list each "
                              "task's sparsity in the tasks file")
        if len(sparsities) == 1 and sparsities[0] is not None:
            defaults["sparsity"] = sparsities[0]
        if isinstance(tasks, (str, Path)):
            out = load_tasks_file(tasks, defaults)
        else:
            out = [t if isinstance(t, Task) else typed_task({**defaults, **t}, "task") for t in tasks]
    else:
        out = cross_tasks(models, parse_sparsities(sparsity), **common)
    return name_tasks(out)
