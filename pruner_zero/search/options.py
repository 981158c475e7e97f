"""Every option of a search, declared once: its type, its default and, for the search's own
options, its command-line flag and help (the CLI generates the search group from them).

Light on purpose (no torch, deap or sympy): the command line builds its parser from it.
``SearchConfig`` (``config``) is these options with what checks and stores them.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pruner_zero.errors import ConfigError

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
TASK_COMBINES = ("mean", "worst")
"""How a search folds its tasks' ratios into one fitness: their weighted geometric mean, or the
worst task's (a metric that must beat the reference on every task, not on average)."""
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
class SearchOptions:
    """Every option of one search: what it measures on, the GP, the fitness, the final
    confirmation, and where and how to run it. ``SearchConfig`` adds what checks them."""

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
    task_combine: str = field(default="mean", metadata=_flag(
        "--task-combine", "several tasks: the fitness is the weighted geometric mean of their "
                          "ppl / reference ppl (mean, default) or the worst task's ratio (worst: "
                          "to beat the reference on every task; task weights do not apply)",
        choices=list(TASK_COMBINES)))
    canonical_cache: bool = field(default=True, metadata=_flag(
        "--no-canonical-cache", "re-measure metrics equal to one already measured",
        action="store_false"))
    fingerprint_cache: bool = field(default=True, metadata=_flag(
        "--no-fingerprint-cache", "re-measure metrics that induce masks already measured",
        action="store_false"))
    # ---- the recipe every candidate (and every baseline but sparsegpt) is pruned with
    allocation: Any = field(default="uniform", metadata=_flag(
        "--allocation", "uniform: every block at --sparsity (default); owl: OWL's outlier-"
                        "weighted block sparsities (mean --sparsity); or a JSON file of block "
                        "sparsities (a list, or a prune report's allocation)"))
    owl_m: float = field(default=5.0, metadata=_flag(
        "--owl-m", "OWL's M (default 5)", type="finite_float"))
    owl_lambda: float = field(default=0.08, metadata=_flag(
        "--owl-lambda", "OWL's lambda: block sparsities span 2*lambda (default 0.08)",
        type="finite_float"))
    update: str | None = field(default="none", metadata=_flag(
        "--update", "none (default), obs: after each candidate's masks, the kept weights are "
                    "reconstructed with SparseGPT's solver under them (a Hessian per layer: "
                    "each candidate walks the blocks); sweep: the candidate's metric chooses "
                    "each 128-column block's mask (each group of M with N:M) inside that solver, on "
                    "the updated weights; lsq, sweep-lsq: the masks of obs, sweep, the kept "
                    "weights then solved exactly by least squares",
        choices=["none", "obs", "sweep", "lsq", "sweep-lsq"]))
    recipe_space: str | Sequence[str] | None = field(default=None, metadata=_flag(
        "--recipe-space", "comma-separated recipes the GP chooses among, each ALLOCATION/UPDATE "
                          "(uniform, owl or owl:M:LAMBDA; none, obs, sweep, lsq or sweep-lsq), e.g. uniform/none,"
                          "uniform/obs,owl:5:0.04/obs: every candidate carries one, crossed and "
                          "mutated with its metric, and best_metric.json holds the best's "
                          "(default: every candidate under --allocation and --update)"))
    # ---- the named metrics and the final confirmation
    seed_metrics: str | Sequence[str] | None = field(default=None, metadata=_flag(
        "--seed-metrics", "comma-separated metrics put into the initial population, "
                          "e.g. wanda,gblm,pruner-zero"))
    final_top: int = field(default=DEFAULT_FINAL_TOP, metadata=_flag(
        "--final-top", "hall-of-fame metrics re-measured at the end on the selection split "
                       "over --confirm-seeds calibration seeds; the lowest mean is the best "
                       "metric (default 5)", type=int))
    reference: str = field(default=DEFAULT_REFERENCE, metadata=_flag(
        "--reference", "fitness = weighted geometric mean over tasks of ppl / ppl(reference), "
                       "or the worst task's with --task-combine worst (default wanda)"))
    baselines: str | Sequence[str] | None = field(default=DEFAULT_BASELINES, metadata=_flag(
        "--baselines", "metrics measured on every task at the start and the end, beside the "
                       "best, under the same recipe (default magnitude,wanda,gblm,pruner-zero; "
                       "'' for none but the --reference, which is always measured; sparsegpt "
                       "may be one)",
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
    def from_options(cls, **options: Any) -> Any:
        """``search()``'s keywords: an unknown one is refused by name, not dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in options if k not in known)
        if unknown:
            raise ConfigError(f"search has no option {', '.join(unknown)}")
        return cls(**options)


def resume_refusal(how: str, names: Sequence[str]) -> ConfigError:
    """The error of a resume given options its config.json already fixes."""
    return ConfigError(f"{how} continues the run with the options in its config.json; drop "
                       f"{', '.join(names)} (or start a new run in another directory)")
