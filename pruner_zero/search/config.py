"""``SearchConfig``: every option of a search, typed and checked in one place.

The CLI builds one from its flags (``from_args``), ``search()`` takes one (or keywords that
become one, ``from_options``), and a run's config.json is one (``to_dict``/``from_dict``): a
resume continues with the stored config and refuses any option given another value
(``check_resume``), so nothing typed is silently ignored.

Heavy modules (deap, sympy) are imported inside the functions: the CLI builds its parser from
this module.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pruner_zero.errors import ConfigError, MetricError

DEFAULT_SPACE = "paper"
DEFAULT_FITNESS_WINDOWS = 128
DEFAULT_FINAL_TOP = 5
DEFAULT_BASELINES = ("magnitude", "wanda", "gblm", "pruner-zero")
DEFAULT_REFERENCE = "wanda"
DEFAULT_CONFIRM_SEEDS = 3
DEFAULT_CONFIRM_WINDOWS = 64
DEFAULT_REPORT_WINDOWS = 128
"""The tail's window budgets (spread evenly over the split): see experiments/README.md, "the
tail of a search", for the windows-vs-seed-spread trade-off they rest on."""
CONFIG_VERSION = 4
"""config.json's layout; ``from_dict`` reads this version and migrates older ones it knows
(2 -> 3: the runtime gained stats_device and stats_dtype; a version-2 run had them at their
defaults, statistics beside the weights in float32. 3 -> 4: confirm_windows and eval_windows;
a version-3 run confirmed and reported on whole splits, null)."""


def _migrated(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """An older config.json as the current version says the same run (anything else unchanged)."""
    if not isinstance(d, Mapping):
        return d
    if d.get("version") == 2 and isinstance(d.get("runtime"), dict):
        d = {**d, "version": 3,
             "runtime": {**d["runtime"], "stats_device": None, "stats_dtype": "float32"}}
    if d.get("version") == 3:
        d = {**d, "version": 4, "confirm_windows": None, "eval_windows": None}
    return d
MAX_SEEDS = 100  # calibration seeds of a confirmation or a comparison: each is a full measurement

FREE_ON_RESUME = ("out", "resume", "progress", "log", "workers", "ray_address", "worker_cpus",
                  "worker_gpus")
"""Options that only say where and how to run: a resume may give them (a loaded Workbench as
``model`` too); every other option comes from the run's config.json."""


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _flag(name: str, help: str, **argparse: Any) -> Any:
    """Metadata of a field that is one CLI flag of the search group (generated from it)."""
    return {"flag": name, "help": help, **argparse}


@dataclass(frozen=True)
class SearchConfig:
    """One search: what it measures on, the GP, the fitness, the final confirmation, and where
    and how to run it. ``checked()`` validates and normalises; ``to_dict()`` is config.json."""

    out: str | Path | None = None
    resume: bool = False
    # ---- what the metrics are measured on (tasks), None: the task's default / the Workbench's
    model: Any = None  # hub id, directory, a list of them, or a loaded Workbench
    tasks: Any = None  # tasks.yaml path, or a list of task mappings / Tasks
    sparsity: Any = None
    structure: str = "unstructured"
    compare: str = "row"
    calib_seed: int | None = None  # None: ``seed`` also seeds calibration
    cache_dir: str | Path | None = None
    allow_partial: bool = False
    data_dir: str | None = None
    calib_split: str | None = None
    fitness_split: str | None = None
    report_split: str | None = None
    nsamples: int | None = None
    seqlen: int | None = None
    calibration: str | None = None
    calib_data: str | None = None
    text_join: str | None = None
    weight: float | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    device_map: str | None = None
    revision: str | None = None
    trust_remote_code: bool | None = None
    stats_device: str | None = None
    stats_dtype: str | None = None
    # ---- the GP (one flag each: the CLI's search group is generated from this metadata)
    space: str | Path = field(default=DEFAULT_SPACE, metadata=_flag(
        "--space", "search space: a name in pruner_zero/search_spaces/ (paper, small) or a YAML "
                   "file (default paper)"))
    population: int = field(default=20, metadata=_flag(
        "--population", "individuals per generation (default 20)", type=int))
    generations: int = field(default=10, metadata=_flag(
        "--generations", "generations after the initial one (default 10)", type=int))
    seed: int = field(default=0, metadata=_flag(
        "--gp-seed", "seed of the GP alone (default: --seed, which also seeds calibration)",
        type=int, cli_default=None))
    tournament: int = field(default=3, metadata=_flag(
        "--tournament", "tournament size (default 3)", type=int))
    cx_prob: float = field(default=0.5, metadata=_flag(
        "--cx-prob", "crossover probability per pair (default 0.5)", type="finite_float"))
    mut_prob: float = field(default=0.3, metadata=_flag(
        "--mut-prob", "mutation probability per individual (default 0.3)", type="finite_float"))
    elite: int = field(default=2, metadata=_flag(
        "--elite", "best hall-of-fame metrics copied unchanged into each generation (default 2)",
        type=int))
    max_height: int | None = field(default=None, metadata=_flag(
        "--max-height", "height limit for offspring (default: the space's max_height)", type=int))
    hof_size: int = field(default=10, metadata=_flag(
        "--hof-size", "hall-of-fame size (default 10)", type=int))
    polish: int = field(default=3, metadata=_flag(
        "--polish", "after the last generation, try the simpler neighbours (one operator "
                    "replaced by one of its arguments) of this many best metrics; 0 = off "
                    "(default 3)", type=int))
    # ---- the fitness
    fitness_windows: int | None = field(default=DEFAULT_FITNESS_WINDOWS, metadata=_flag(
        "--fitness-windows", "evaluation windows measured per candidate, spread evenly over the "
                             "split, 0 = all (default 128)", type=int))
    race_factor: float | None = field(default=None, metadata=_flag(
        "--race-factor", "stop a candidate whose running ppl exceeds this x the worst "
                         "hall-of-fame fitness (default off)", type="finite_float"))
    race_chunk: int = field(default=16, metadata=_flag(
        "--race-chunk", "windows between racing checks (default 16)", type=int))
    canonical_cache: bool = field(default=True, metadata=_flag(
        "--no-canonical-cache", "re-measure metrics equal to one already measured",
        action="store_false"))
    fingerprint_cache: bool = field(default=True, metadata=_flag(
        "--no-fingerprint-cache", "re-measure metrics that induce masks already measured",
        action="store_false"))
    # ---- the named metrics and the final confirmation
    seed_metrics: str | Sequence[str] | None = field(default=None, metadata=_flag(
        "--seed-metrics", "comma-separated metrics put into the initial population, "
                          "e.g. wanda,gblm,pruner-zero"))
    final_top: int = field(default=DEFAULT_FINAL_TOP, metadata=_flag(
        "--final-top", "hall-of-fame metrics re-measured at the end on the selection split "
                       "over --confirm-seeds calibration seeds; the lowest mean is the best "
                       "metric (default 5)", type=int))
    reference: str = field(default=DEFAULT_REFERENCE, metadata=_flag(
        "--reference", "fitness = weighted geometric mean over tasks of ppl / ppl(reference) "
                       "(default wanda)"))
    baselines: str | Sequence[str] | None = field(default=DEFAULT_BASELINES, metadata=_flag(
        "--baselines", "metrics measured on every task at the start and the end, beside the "
                       "best (default magnitude,wanda,gblm,pruner-zero; '' for none but the "
                       "--reference, which is always measured)",
        cli_default=",".join(DEFAULT_BASELINES)))
    confirm_seeds: int = field(default=DEFAULT_CONFIRM_SEEDS, metadata=_flag(
        "--confirm-seeds", "calibration seeds (the task's seed and the next ones) of the final "
                           "confirmation and report (default 3)", type=int))
    confirm_windows: int | None = field(default=DEFAULT_CONFIRM_WINDOWS, metadata=_flag(
        "--confirm-windows", "windows of the selection split per measurement of the final "
                             "confirmation, spread evenly over it, 0 = all (default "
                             f"{DEFAULT_CONFIRM_WINDOWS})", type="window_count"))
    eval_windows: int | None = field(default=DEFAULT_REPORT_WINDOWS, metadata=_flag(
        "--eval-windows", "windows of the report split per measurement of the best metric and "
                          "the baselines, spread evenly over it (window floor(i*W/N) of its W), "
                          f"0 = all (default {DEFAULT_REPORT_WINDOWS})", type="window_count"))
    # ---- where and how to run: free on a resume, not stored
    progress: bool = True
    log: Callable[[str], None] = field(default=_stderr, compare=False)
    workers: int = field(default=0, metadata=_flag(
        "--workers", "measure each generation's candidates on N Ray actors, each with its own "
                     "model and statistics (one GPU each where there are GPUs, else CPU "
                     "threads); results are the same for any N (default 0: in this process; "
                     "needs the ray extra)", type=int))
    ray_address: str | None = field(default=None, metadata=_flag(
        "--ray-address", "join this running Ray cluster (e.g. auto, or ray://head:10001) "
                         "instead of starting one on this machine"))
    worker_cpus: int | None = field(default=None, metadata=_flag(
        "--worker-cpus", "CPU threads per worker (default: this machine's or the cluster's "
                         "CPUs / --workers)", type=int))
    worker_gpus: float | None = field(default=None, metadata=_flag(
        "--worker-gpus", "GPUs per worker (default: 1 on a GPU run; with --device-map, the "
                         "cluster's GPUs / --workers, so a model too large for one GPU is "
                         "spread over its worker's GPUs)", type=float))
    # ---- filled in when the run is created, or read from its config.json
    task_list: tuple[Any, ...] | None = None  # the resolved, named Tasks
    space_definition: Mapping[str, Any] | None = None  # the frozen search space
    created: str | None = None

    # ------------------------------------------------------------ building one

    @classmethod
    def from_options(cls, **options: Any) -> "SearchConfig":
        """``search()``'s keywords: an unknown one is refused by name, not dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in options if k not in known)
        if unknown:
            raise ConfigError(f"search has no option {', '.join(unknown)}")
        return cls(**options)

    @classmethod
    def from_args(cls, a: Any, log: Callable[[str], None] = _stderr) -> "SearchConfig":
        """The one place the CLI's flags become options. The statistics cache defaults to
        $PRUNER_ZERO_CACHE (or ~/.cache/pruner_zero) on the command line, to none in Python."""
        from pruner_zero.workbench import default_cache_dir

        cache = None if a.no_cache else Path(a.cache_dir) if a.cache_dir else default_cache_dir()
        searched = {f.name: getattr(a, _dest(f)) for f in fields(cls) if "flag" in f.metadata}
        searched["seed"] = a.seed if a.gp_seed is None else a.gp_seed
        return cls(
            out=a.resume if a.resume is not None else a.out, resume=a.resume is not None,
            model=a.model, tasks=a.tasks, sparsity=a.sparsity, structure=a.structure,
            compare=a.compare, calib_seed=a.seed, cache_dir=cache, allow_partial=a.allow_partial,
            data_dir=a.data_dir, calib_split=a.calib_split, fitness_split=a.fitness_split,
            report_split=a.report_split, nsamples=a.nsamples, seqlen=a.seqlen,
            calibration=a.calibration, calib_data=a.calib_data, text_join=a.text_join,
            device=a.device, dtype=a.dtype, batch_size=a.batch_size, device_map=a.device_map,
            revision=a.revision, trust_remote_code=a.trust_remote_code,
            stats_device=a.stats_device, stats_dtype=a.stats_dtype, progress=not a.quiet, log=log, **searched)

    # ------------------------------------------------------------ the resume rule

    def check_resume(self, baseline: "SearchConfig | None" = None, how: str = "resume=True",
                     names: Callable[[list[str]], list[str]] = list) -> None:
        """A resume continues with the options in the run's config.json: an option given
        another value than ``baseline``'s (the front end's value for an option left out; the
        defaults for Python) would be silently ignored, so it is refused, named by ``names``."""
        baseline = SearchConfig() if baseline is None else baseline
        from pruner_zero.workbench import Workbench

        changed = [f.name for f in fields(self)
                   if f.name not in FREE_ON_RESUME and f.compare
                   and not (f.name == "model" and isinstance(self.model, Workbench))
                   and getattr(self, f.name) != getattr(baseline, f.name)]
        if changed:
            raise resume_refusal(how, names(sorted(changed)))

    # ------------------------------------------------------------ validation

    def checked(self, stored: bool = False) -> "SearchConfig":
        """Every option checked (the first problem is one ConfigError naming the option: its
        flag, or its config.json key when ``stored``) and normalised: metric lists are tuples
        of names, ``fitness_windows`` None for all, the space loaded (``space_definition``),
        ``max_height``/``polish`` resolved as ``GPSettings.checked`` does."""
        from pruner_zero.metric.io import split_metric_list
        from pruner_zero.metric.space import SearchSpace, load_space

        name = _key if stored else _option
        self._check_types(stored)
        if stored:
            space_obj = SearchSpace(**self.space_definition)
        else:
            space_obj = load_space(self.space)
        settings = self.gp_settings(space_obj)
        seeds = tuple(split_metric_list(self.seed_metrics, "--seed-metrics"))
        _seed_trees(seeds, space_obj)
        if len(seeds) > self.population:
            raise ConfigError(f"{len(seeds)} seed metrics do not fit into a population of "
                              f"{self.population}.")
        if not _count(self.final_top, 0):
            raise ConfigError(f"{name('final_top')} must be a non-negative integer, got "
                              f"{self.final_top!r}.")
        if not _count(self.confirm_seeds, 1, MAX_SEEDS):
            raise ConfigError(f"{name('confirm_seeds')} must be an integer from 1 to {MAX_SEEDS}, "
                              f"got {self.confirm_seeds!r}.")
        race = self.race_factor
        if race is not None and not (isinstance(race, (int, float)) and not isinstance(race, bool)
                                     and math.isfinite(race) and race >= 1.0):
            raise ConfigError(f"{name('race_factor')} must be at least 1 (or left off), got {race}.")
        if not _count(self.race_chunk, 1):
            raise ConfigError(f"{name('race_chunk')} must be a positive integer, got "
                              f"{self.race_chunk!r}.")
        from pruner_zero.data import window_budget

        budgets = {key: window_budget(getattr(self, key), name(key))
                   for key in ("fitness_windows", "confirm_windows", "eval_windows")}
        for key in ("canonical_cache", "fingerprint_cache", "allow_partial"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{name(key)} must be true or false, got {getattr(self, key)!r}.")
        if self.compare not in ("row", "layer"):
            raise ConfigError(f"{name('compare')} must be row or layer, got {self.compare!r}.")
        if not _count(self.workers, 0):
            raise ConfigError(f"workers must be a non-negative integer, got {self.workers!r}.")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ConfigError(f"ray_address must be an address or None, got {self.ray_address!r}.")
        if self.worker_cpus is not None and not _count(self.worker_cpus, 1):
            raise ConfigError(f"{name('worker_cpus')} must be a positive integer, got "
                              f"{self.worker_cpus!r}.")
        if self.worker_gpus is not None and (
                isinstance(self.worker_gpus, bool) or not isinstance(self.worker_gpus, (int, float))
                or not 0 < self.worker_gpus < math.inf):
            raise ConfigError(f"{name('worker_gpus')} must be a positive number, got "
                              f"{self.worker_gpus!r}.")
        if self.worker_gpus is not None and str(self.device).startswith("cpu"):
            raise ConfigError(f"{name('worker_gpus')} with --device {self.device}: a CPU run uses "
                              "no GPU; leave it out, or run on a GPU.")
        from pruner_zero.search.workers import require_ray

        require_ray(self.workers, self.ray_address)
        if not isinstance(self.reference, str):
            raise ConfigError(f"{name('reference')} must be a metric, got {self.reference!r}.")
        bases = tuple(split_metric_list(self.baselines, "--baselines"))
        for metric in [*bases, self.reference]:
            _metric_tree(metric)
        return replace(self, seed_metrics=seeds, baselines=bases, **budgets,
                       max_height=settings.max_height, polish=settings.polish,
                       space_definition=_definition(space_obj))

    def _check_types(self, stored: bool) -> None:
        """The Python API's arguments, checked as the CLI's are: one clear error, not a
        TypeError from deep inside."""
        from pruner_zero.workbench import Workbench

        def need(ok: bool, what: str, value: Any) -> None:
            if not ok:
                raise ConfigError(f"{what}, got {value!r}")

        path_like = (str, Path)
        if self.out is None and not stored:
            raise ConfigError("search needs an output directory (--out).")
        need(self.out is None or isinstance(self.out, path_like), "out must be a directory path",
             self.out)
        need(self.cache_dir is None or isinstance(self.cache_dir, path_like),
             f"{_key('cache_dir') if stored else 'cache_dir'} must be a path", self.cache_dir)
        need(self.model is None or isinstance(self.model, (str, Workbench)) or (
            isinstance(self.model, (list, tuple)) and all(isinstance(m, str) for m in self.model)),
            "model must be a hub id or directory, a list of them, or a Workbench", self.model)
        need(self.tasks is None or isinstance(self.tasks, path_like) or (
            isinstance(self.tasks, (list, tuple)) and all(isinstance(t, dict) or hasattr(t, "as_dict")
                                                          for t in self.tasks)),
            "tasks must be a tasks.yaml path or a list of task mappings", self.tasks)
        for key in ("baselines", "seed_metrics"):
            value = getattr(self, key)
            need(value is None or isinstance(value, str) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)),
                f"{_key(key) if stored else key} must be metrics separated by commas or a list "
                "of them", value)

    def gp_settings(self, space: Any = None) -> Any:
        """The GP loop's settings (``run_gp``), checked against ``space`` when given."""
        from pruner_zero.search.loop import GPSettings

        settings = GPSettings(**{f.name: getattr(self, f.name) for f in fields(GPSettings)})
        return settings if space is None else settings.checked(space)

    def search_space(self) -> Any:
        """The run's search space: the frozen definition once there is one, else ``space``."""
        from pruner_zero.metric.space import SearchSpace, load_space

        if self.space_definition is not None:
            return SearchSpace(**self.space_definition)
        return load_space(self.space)

    def runtime(self) -> Any:
        """Where and how models run (the options given; the rest Runtime's defaults)."""
        from pruner_zero.measure import Runtime

        return Runtime(**{f.name: getattr(self, f.name) for f in fields(Runtime)
                          if getattr(self, f.name) is not None})

    def protocol(self) -> dict[str, Any]:
        """The task options given (None: not given), for ``build_tasks``."""
        from pruner_zero.tasks import TASK_KEYS

        return {k: getattr(self, k) for k in TASK_KEYS
                if k not in ("model", "sparsity", "structure", "seed")
                and getattr(self, k) is not None}

    # ------------------------------------------------------------ config.json

    def to_dict(self) -> dict[str, Any]:
        """config.json: what a resume needs, every value resolved (tasks, space, GP)."""
        if self.task_list is None or self.space_definition is None:
            raise ConfigError("a search config is stored once its tasks and space are resolved")
        gp = {f.name: getattr(self, f.name) for f in fields(_gp_fields())}
        return {
            "command": "search", "version": CONFIG_VERSION,
            "created": self.created or time.strftime("%Y-%m-%dT%H:%M:%S"),
            "tasks": [t.as_dict() for t in self.task_list],
            "runtime": self.runtime().as_dict(), "compare": self.compare,
            "cache_dir": None if self.cache_dir is None else str(self.cache_dir),
            "space": {"spec": str(self.space), "definition": dict(self.space_definition)},
            "gp": gp,
            "fitness": {"fitness_windows": self.fitness_windows, "windows_spread": True,
                        "race_factor": self.race_factor, "race_chunk": self.race_chunk,
                        "canonical_cache": self.canonical_cache,
                        "fingerprint_cache": self.fingerprint_cache},
            "reference": self.reference, "baselines": list(self.baselines or ()),
            "confirm_seeds": self.confirm_seeds, "confirm_windows": self.confirm_windows,
            "eval_windows": self.eval_windows, "seed_metrics": list(self.seed_metrics or ()),
            "final_top": self.final_top, "allow_partial": self.allow_partial,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path | str = "config.json",
                  **run: Any) -> "SearchConfig":
        """A run's config.json, after every value in it has passed the checks a new run's
        options pass: a hand-edited or damaged file is refused by name before any work, not
        hours later. ``run`` gives the options that are free on a resume (out, progress, ...)."""
        from pruner_zero.measure import Runtime
        from pruner_zero.tasks import Task, _typed

        d = _migrated(d)
        version = d.get("version") if isinstance(d, Mapping) else None
        if version != CONFIG_VERSION:
            raise ConfigError(f"{Path(path).parent} was made by an older pruner-zero (config "
                              f"version {version}); its format cannot be resumed, start a new run")

        def need(ok: bool, what: str) -> None:
            if not ok:
                raise ConfigError(what)

        try:
            need(isinstance(d.get("tasks"), list) and d["tasks"] != []
                 and all(isinstance(t, dict) for t in d["tasks"]), "'tasks' must be a list of tasks")
            for i, t in enumerate(d["tasks"], start=1):
                _typed(t, f"task {i}")
                need(isinstance(t.get("name"), str) and t["name"], f"task {i} has no name")
            need(len({t["name"] for t in d["tasks"]}) == len(d["tasks"]), "task names repeat")
            need(isinstance(d.get("runtime"), dict), "'runtime' must be a mapping")
            runtime = Runtime(**d["runtime"])
            space = d.get("space")
            need(isinstance(space, dict) and isinstance(space.get("definition"), dict),
                 "'space.definition' must be a mapping")
            need(isinstance(d.get("gp"), dict), "'gp' must be a mapping")
            fit = d.get("fitness")
            need(isinstance(fit, dict), "'fitness' must be a mapping")
            unknown = sorted(set(d["gp"]) - {f.name for f in fields(_gp_fields())})
            need(not unknown, f"GPSettings.__init__() got an unexpected keyword argument "
                              f"{unknown[0] if unknown else ''!r}")
            need(isinstance(d.get("baselines"), list), "'baselines' must be a list of metrics")
            need(isinstance(d.get("seed_metrics"), list), "'seed_metrics' must be a list of metrics")
            config = cls(
                **run, task_list=tuple(Task.from_dict(t) for t in d["tasks"]),
                **asdict(runtime), compare=d.get("compare"), cache_dir=d.get("cache_dir"),
                space=space.get("spec", DEFAULT_SPACE), space_definition=space["definition"],
                **d["gp"],
                fitness_windows=fit.get("fitness_windows"), race_factor=fit.get("race_factor"),
                race_chunk=fit.get("race_chunk"), canonical_cache=fit.get("canonical_cache"),
                fingerprint_cache=fit.get("fingerprint_cache"), reference=d.get("reference"),
                baselines=d["baselines"], seed_metrics=d["seed_metrics"],
                confirm_seeds=d.get("confirm_seeds"), final_top=d.get("final_top"),
                confirm_windows=d.get("confirm_windows"), eval_windows=d.get("eval_windows"),
                allow_partial=d.get("allow_partial", False), created=d.get("created"))
            for key in ("fitness_windows", "confirm_windows", "eval_windows"):
                if getattr(config, key) == 0:
                    raise ConfigError(f"{_key(key)} must be a positive integer or null")
            return config.checked(stored=True)
        except (ConfigError, MetricError, TypeError, ValueError, KeyError) as exc:
            kind = "" if isinstance(exc, (ConfigError, MetricError)) else type(exc).__name__ + ": "
            raise ConfigError(f"{path} is damaged ({kind}{exc}); nothing was changed: restore the "
                              "file, or start a new run with --out") from None


def resume_refusal(how: str, names: Sequence[str]) -> ConfigError:
    """The error of a resume given options its config.json already fixes."""
    return ConfigError(f"{how} continues the run with the options in its config.json; drop "
                       f"{', '.join(names)} (or start a new run in another directory)")


def _gp_fields() -> Any:
    from pruner_zero.search.loop import GPSettings

    return GPSettings


_KEYS = {"fitness_windows": "fitness.fitness_windows", "race_factor": "fitness.race_factor",
         "race_chunk": "fitness.race_chunk", "canonical_cache": "fitness.canonical_cache",
         "fingerprint_cache": "fitness.fingerprint_cache"}


def _key(name: str) -> str:
    """An option as config.json names it."""
    return f"'{_KEYS.get(name, name)}'"


def _option(name: str) -> str:
    """An option as the command line names it."""
    f = _FIELDS.get(name)
    if f is not None and "flag" in f.metadata:
        return f.metadata["flag"]
    return f"--{name.replace('_', '-')}"


_FIELDS = {f.name: f for f in fields(SearchConfig)}


def _dest(f: Any) -> str:
    return f.metadata["flag"][2:].replace("-", "_")


def add_search_flags(group: Any, finite_float: Callable[[str], float],
                     window_count: Callable[[str], int | None]) -> None:
    """The CLI's search options, one per field that declares a flag (so the flag, its default
    and its help live beside the field they set)."""
    for f in fields(SearchConfig):
        meta = dict(f.metadata)
        if "flag" not in meta:
            continue
        flag, kwargs = meta.pop("flag"), meta
        if kwargs.get("type") == "finite_float":
            kwargs["type"] = finite_float
        elif kwargs.get("type") == "window_count":
            kwargs["type"] = window_count
        if "action" not in kwargs:
            kwargs["default"] = kwargs.pop("cli_default", f.default)
        group.add_argument(flag, **kwargs)


def cli_names(a: Any, parser: Any) -> Callable[[list[str]], list[str]]:
    """Options named as the command line's flags: of the flags that set a field, those given."""
    feeds = {f.name: [f.metadata["flag"]] for f in fields(SearchConfig) if "flag" in f.metadata}
    feeds.update(seed=["--seed", "--gp-seed"], calib_seed=["--seed"],
                 cache_dir=["--cache-dir", "--no-cache"], progress=["--quiet"])

    def names(changed: list[str]) -> list[str]:
        out: list[str] = []
        for name in changed:
            flags = feeds.get(name, [f"--{name.replace('_', '-')}"])
            given = [fl for fl in flags if getattr(a, fl[2:].replace("-", "_"))
                     != parser.get_default(fl[2:].replace("-", "_"))]
            out += [fl for fl in given or flags[:1] if fl not in out]
        return sorted(out)
    return names


def _count(v: Any, low: int, high: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)


def _definition(space: Any) -> dict[str, Any]:
    """A SearchSpace as config.json stores it (lists, no private fields)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(space).items()
            if not k.startswith("_")}


def _metric_tree(spec: str) -> Any:
    from pruner_zero.metric.io import resolve_metric

    if spec == "sparsegpt":
        raise ConfigError("sparsegpt is a pruning method, not a metric; it cannot be a search "
                          "baseline or reference (compare it with `pruner-zero compare`)")
    return resolve_metric(spec)[1]


def _seed_trees(names: Sequence[str], space: Any) -> list[Any]:
    """Built-in or user metrics that start in the initial population, parsed over the space's ops."""
    from pruner_zero.metric.io import format_formula, parse_formula, resolve_metric

    trees = []
    for name in names:
        _, tree = resolve_metric(name)
        try:
            trees.append(parse_formula(format_formula(tree), space.pset()))
        except MetricError as exc:
            raise ConfigError(f"seed metric '{name}' ({format_formula(tree)}) uses an op or terminal "
                              f"outside the search space '{space.name}': {exc}") from exc
        if len(tree) > space.max_size or tree.height > space.max_height:
            raise ConfigError(f"seed metric '{name}' ({len(tree)} nodes, height {tree.height}) "
                              f"exceeds the search space '{space.name}' (max_size {space.max_size}, "
                              f"max_height {space.max_height})")
    return trees
