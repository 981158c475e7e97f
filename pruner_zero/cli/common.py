"""What every command shares: the parser that errs in one line, the option types, the model
and data flags, and the one mapping of those flags to a ``Runtime`` and a ``Protocol``.

Light on purpose: the CLI starts (and `--help` answers) without torch; the commands import the
library when they run.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import ConfigError
from ..runtime import STATS_DTYPES, Runtime
from ..windows import window_budget

CALIBRATION_FLAGS = ("--calib-split", "--calib-data", "--nsamples", "--seed", "--cache-dir",
                     "--no-cache")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `error:` line (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """A message on one line: what the user typed may hold newlines or control characters,
    shown escaped so the error stays one line."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def finite_float(text: str) -> float:
    """A float option: NaN and infinity are refused here, by name, not somewhere downstream."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def window_count(text: str) -> int | None:
    """A window budget on the command line (``windows.window_budget``: 0 = the whole split)."""
    try:
        return window_budget(int(text), "the window count")
    except (ValueError, ConfigError):
        raise argparse.ArgumentTypeError(f"expected 0 (the whole split) or a positive number of "
                                         f"windows, got {text!r}") from None


def add_eval_windows_flag(g, default: int | None = None, what: str = "the evaluation split") -> None:
    whole = "the whole split" if default is None else str(default)
    g.add_argument("--eval-windows", type=window_count, default=default, metavar="N",
                   help=f"measure N windows spread evenly over {what} (window floor(i*W/N) of its "
                        f"W), 0 = all (default {whole}); a CPU-sized estimate, stated in reports")


def add_model_args(p: argparse.ArgumentParser, search: bool = False,
                   calibrates: bool = True) -> None:
    """The model and data options. `eval` calibrates nothing: its help shows no calibration
    options (still accepted, with a warning, so that one argument list serves prune and eval)."""
    g = p.add_argument_group("model and data")
    hide = {} if calibrates else {"help": argparse.SUPPRESS}
    if search:
        g.add_argument("--model", action="append", default=None,
                       help="hub id, local directory or .gguf file; repeat for several models (one task per "
                            "model and sparsity); not needed with --resume or --tasks")
    else:
        g.add_argument("--model", required=True,
                       help="hub id, local directory (from_pretrained), or a .gguf file "
                            "(dequantized once into the cache, see `convert`)")
    _add_runtime_args(g, hide)
    g.add_argument("--data-dir", default=None,
                   help="directory with train.txt/valid.txt/test.txt (default: $PRUNER_ZERO_DATA, "
                        "else WikiText-2 from the hub)")
    g.add_argument("--calib-split", default="train",
                   **(hide or {"help": "calibration split (default train)"}))
    g.add_argument("--calib-data", default=None, metavar="c4|FILE", **(hide or {
        "help": "calibrate on documents instead of --calib-split: c4 (the allenai/c4 English "
                "shard Wanda and SparseGPT use, from the hub) or a local file of that format "
                "(JSON lines with a \"text\" field, .gz or not); a window at a random offset of "
                "a random document longer than --seqlen, as they sample"}))
    g.add_argument("--text-join", default="concat", choices=["concat", "wanda"],
                   help="hub WikiText-2 rows: concat (as they are, the file's text; default) or "
                        "wanda (joined by a blank line, as Wanda and SparseGPT read them)")
    if search:
        g.add_argument("--fitness-split", default="valid",
                       help="selection split: fitness and the choice of the best metric (default "
                            "valid; 'validation' on the hub)")
        g.add_argument("--report-split", default="test",
                       help="report split, used only to report the best metric and the baselines "
                            "(default test)")
    else:
        g.add_argument("--eval-split", default="test", help="evaluation split (default test)")
        add_eval_windows_flag(g)
    g.add_argument("--nsamples", type=int, default=128,
                   **(hide or {"help": "calibration windows (default 128)"}))
    g.add_argument("--seqlen", type=int, default=None,
                   help="tokens per window (default min(2048, model limit))")
    g.add_argument("--seed", type=int, default=0,
                   **(hide or {"help": "calibration sampling seed (default 0)"}))
    g.add_argument("--cache-dir", default=None, **(hide or {
        "help": "statistics cache (default $PRUNER_ZERO_CACHE or ~/.cache/pruner_zero)"}))
    g.add_argument("--no-cache", action="store_true",
                   **(hide or {"help": "recompute statistics, write no cache"}))
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_runtime_args(g, hide: dict) -> None:
    """One flag per ``Runtime`` field."""
    g.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default auto)")
    g.add_argument("--dtype", default="auto", help="auto | float32 | float16 | bfloat16")
    g.add_argument("--revision", default=None,
                   help="hub branch, tag or commit of --model (default the main branch)")
    g.add_argument("--trust-remote-code", action="store_true",
                   help="run the model repository's own code (architectures transformers lacks)")
    g.add_argument("--device-map", default=None,
                   help="e.g. auto: spread a model too large for one GPU over all GPUs")
    g.add_argument("--stats-device", default=None, **(hide or {
        "help": "where the statistics X and G live: cpu keeps them in host memory and moves one "
                "layer at a time to the accelerator (default: beside each weight)"}))
    g.add_argument("--stats-dtype", default="float32", choices=list(STATS_DTYPES),
                   **(hide or {"help": "what G is stored in (default float32; bfloat16 halves its "
                                       "memory, see the README for its effect on rankings)"}))
    g.add_argument("--batch-size", type=int, default=8, help="evaluation windows per forward")


def runtime_from(a: argparse.Namespace) -> Runtime:
    """The one place the runtime flags become a ``Runtime`` (prune, eval, compare, search)."""
    return Runtime(device=a.device, dtype=a.dtype, batch_size=a.batch_size,
                   device_map=a.device_map, revision=a.revision,
                   trust_remote_code=a.trust_remote_code, stats_device=a.stats_device,
                   stats_dtype=a.stats_dtype)


def cache_from(a: argparse.Namespace, default: Path) -> Path | None:
    """The statistics cache: none with --no-cache, else --cache-dir, else ``default``."""
    return None if a.no_cache else Path(a.cache_dir) if a.cache_dir else default


def add_prune_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sparsity", type=finite_float, default=None,
                   help="fraction of weights to zero, in (0, 1) (default 0.5; implied by N:M)")
    p.add_argument("--structure", default="unstructured", help="unstructured | N:M, e.g. 2:4, 4:8")
    p.add_argument("--compare", default="row", choices=["row", "layer"],
                   help="unstructured: rank weights within each output row (default) or layer")
    p.add_argument("--calibration", default="dense", choices=["dense", "sequential"],
                   help="how X is measured: on the dense model in one pass (default; a candidate "
                        "costs one forward) or layer by layer on the outputs of the blocks already "
                        "pruned, as Wanda and Pruner-Zero do (G stays the dense model's; "
                        "sparsegpt always walks layer by layer)")


def add_allocation_args(p: argparse.ArgumentParser) -> None:
    """How the sparsity is spread over the decoder's blocks."""
    p.add_argument("--allocation", default=None,
                   help="uniform: every block at --sparsity (default); owl: blocks with more "
                        "outlier Wanda scores keep more weights, the mean stays --sparsity "
                        "(OWL, Yin et al. 2024); or a JSON file of block sparsities (a list, "
                        "or a prune report's allocation). Unstructured metrics only; a recipe "
                        "file given as the metric brings its own")
    p.add_argument("--owl-m", type=finite_float, default=None,
                   help="OWL's M: a score above M x its block's mean is an outlier (default 5)")
    p.add_argument("--owl-lambda", type=finite_float, default=None,
                   help="OWL's lambda: block sparsities span 2*lambda (default 0.08)")


def allocation_from(a: argparse.Namespace):
    """The --allocation flags as an Allocation, or None when --allocation is not given (the
    recipe file's, or uniform)."""
    from ..allocation import allocation_option

    if a.allocation is None:
        if a.owl_m is not None or a.owl_lambda is not None:
            raise ConfigError("--owl-m and --owl-lambda are OWL's: give --allocation owl")
        return None
    return allocation_option(a.allocation, a.owl_m, a.owl_lambda)


def add_update_args(p: argparse.ArgumentParser) -> None:
    """What the kept weights become."""
    p.add_argument("--update", default=None, choices=["none", "obs", "sweep", "lsq", "sweep-lsq"],
                   help="none: the kept weights stay (default); obs: after the metric's masks, "
                        "each layer's kept weights are reconstructed with SparseGPT's solver "
                        "under those masks, block by block on the calibration windows; sweep: "
                        "the metric chooses each block's mask inside the solver, on the weights "
                        "as updated so far (--metric 'mul(sqr(W), H)' with --compare layer, or "
                        "N:M, is SparseGPT's choice, up to its rounding of one weight per "
                        "block); lsq, sweep-lsq: the masks of obs, sweep, the kept weights "
                        "then solved exactly by least squares (each row's best reconstruction "
                        "of the layer's outputs under its mask). A "
                        "recipe file given as the metric brings its own")


def add_allow_partial(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-partial", action="store_true",
                   help="prune even when nn.Linear weights hold under 90%% of the decoder's "
                        "parameters (mixture-of-experts models keep experts as 3-D tensors)")


def add_task_args(p: argparse.ArgumentParser) -> None:
    """The tasks of a search or a comparison: models x sparsities, or a tasks file."""
    add_model_args(p, search=True)
    add_prune_shape(p)
    for action in p._actions:  # several sparsities: one task each
        if action.dest == "sparsity":
            action.type = str
            action.help = ("fraction(s) of weights to zero, comma-separated for one task each, "
                           "e.g. 0.6,0.7 (default 0.5; implied by N:M)")
    p.add_argument("--tasks", default=None, metavar="YAML",
                   help="a YAML list of tasks (keys: model, data_dir, calib_split, fitness_split, "
                        "report_split, nsamples, seqlen, seed, sparsity, structure, calibration, "
                        "calib_data, text_join, weight; "
                        "omitted keys take the command line's values)")
    add_allow_partial(p)


def task_options(a: argparse.Namespace) -> dict:
    """The task keys the command line gives every task (``tasks.build_tasks``)."""
    return dict(structure=a.structure, data_dir=a.data_dir, calib_split=a.calib_split,
                fitness_split=a.fitness_split, report_split=a.report_split,
                nsamples=a.nsamples, seqlen=a.seqlen, seed=a.seed, calibration=a.calibration,
                calib_data=a.calib_data, text_join=a.text_join)


def add_zero_shot_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("zero-shot accuracy (lm-eval: pip install 'pruner-zero[zeroshot]')")
    g.add_argument("--tasks", default=None, metavar="LIST",
                   help="lm-eval tasks, comma-separated, e.g. boolq,rte,hellaswag,winogrande,"
                        "arc_easy,arc_challenge,openbookqa ('paper' is those seven); scored "
                        "zero-shot in memory, accuracy ± stderr per task")
    g.add_argument("--tasks-include", action="append", default=[], metavar="DIR",
                   help="a directory of lm-eval task YAML files (repeatable), e.g. local tasks "
                        "for a machine without the hub")
    g.add_argument("--tasks-limit", type=int, default=None, metavar="N",
                   help="score only the first N examples of each task (a quick look, not a "
                        "number for a paper)")
