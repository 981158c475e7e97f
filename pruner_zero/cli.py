"""`pruner-zero` command line: parse flags, call the API, print. Errors are one line."""
from __future__ import annotations

import argparse
import math
import sys

from .errors import PrunerZeroError


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `error:` line (exit 2), like every other error."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """A message on one line: what the user typed may hold newlines or control characters,
    shown escaped so the error stays one line."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def finite_float(text: str) -> float:
    """A float option: NaN and infinity are refused here, by name, not somewhere downstream."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


CALIBRATION_FLAGS = ("--calib-split", "--calib-data", "--nsamples", "--seed", "--cache-dir",
                     "--no-cache")


def _add_model_args(p: argparse.ArgumentParser, search: bool = False,
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
    g.add_argument("--stats-dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   **(hide or {"help": "what G is stored in (default float32; bfloat16 halves its "
                                       "memory, see the README for its effect on rankings)"}))
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
    g.add_argument("--batch-size", type=int, default=8, help="evaluation windows per forward")
    g.add_argument("--cache-dir", default=None, **(hide or {
        "help": "statistics cache (default $PRUNER_ZERO_CACHE or ~/.cache/pruner_zero)"}))
    g.add_argument("--no-cache", action="store_true",
                   **(hide or {"help": "recompute statistics, write no cache"}))
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def window_count(text: str) -> int | None:
    """A window budget on the command line (``data.window_budget``: 0 = the whole split)."""
    from .data import window_budget
    from .errors import ConfigError

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


def _protocol_kwargs(a: argparse.Namespace) -> dict:
    return {"data_dir": a.data_dir, "calib_split": a.calib_split, "eval_split": a.eval_split,
            "eval_windows": a.eval_windows,
            "nsamples": a.nsamples, "seqlen": a.seqlen, "seed": a.seed, "device": a.device,
            "dtype": a.dtype, "batch_size": a.batch_size, "device_map": a.device_map,
            "calibration": getattr(a, "calibration", "dense"), "revision": a.revision,
            "calib_data": a.calib_data, "text_join": a.text_join,
            "trust_remote_code": a.trust_remote_code, "stats_device": a.stats_device,
            "stats_dtype": a.stats_dtype}


def _workbench(a: argparse.Namespace):
    from pathlib import Path

    from .workbench import Protocol, Workbench, default_cache_dir

    cache = None if a.no_cache else Path(a.cache_dir) if a.cache_dir else default_cache_dir()
    return Workbench(Protocol(model=a.model, **_protocol_kwargs(a)), cache_dir=cache,
                     progress=not a.quiet, log=_log)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _add_prune_shape(p: argparse.ArgumentParser) -> None:
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


def _add_allow_partial(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow-partial", action="store_true",
                   help="prune even when nn.Linear weights hold under 90%% of the decoder's "
                        "parameters (mixture-of-experts models keep experts as 3-D tensors)")


def cmd_prune(a: argparse.Namespace) -> int:
    from .pruning import prune, resolve
    from .zeroshot import ZeroShot
    from .masks import parse_structure

    parse_structure(a.structure, a.sparsity, a.compare)  # cheap checks before loading anything
    resolve(a.metric)
    zero_shot = ZeroShot.checked(a.tasks, a.tasks_include, a.tasks_limit)  # before the model
    result = prune(_workbench(a), a.metric, a.sparsity, a.structure, a.compare, save=a.save,
                   report=a.report, dense=not a.no_dense_ppl, allow_partial=a.allow_partial,
                   log=_log, zero_shot=zero_shot)
    from .files import dumps_json

    print(dumps_json({k: result.get(k) for k in ("metric", "ppl_dense", "ppl", "sparsity", "windows",
                                                  "seconds")}))
    _print_zero_shot(zero_shot)
    return 0


def _print_zero_shot(zero_shot) -> None:
    if zero_shot.results:
        from .zeroshot import summary_table

        print(summary_table(zero_shot.results), flush=True)


def cmd_eval(a: argparse.Namespace) -> int:
    from .gguf import find_gguf

    ignored = CALIBRATION_FLAGS if find_gguf(a.model) is None else \
        [f for f in CALIBRATION_FLAGS if f not in ("--cache-dir", "--no-cache")]  # the conversion's
    given = [f for f in ignored if getattr(a, f[2:].replace("-", "_")) !=
             a._parser.get_default(f[2:].replace("-", "_"))]
    if given:
        _log(f"warning: eval calibrates nothing; {', '.join(given)} ignored")
    from .zeroshot import ZeroShot
    from .files import atomic_write_json, check_writable_file

    zero_shot = ZeroShot.checked(a.tasks, a.tasks_include, a.tasks_limit)
    if a.report is not None:
        check_writable_file(a.report, "--report")
    bench = _workbench(a)
    windows = bench.report_windows()
    ppl = bench.perplexity(windows)
    _log(f"perplexity on {bench.windows_note(windows.shape[0])}")
    late = None
    try:  # the perplexity is finished: a task failing now does not cost the report
        zero_shot.measure(bench, "model", _log)
    except PrunerZeroError as exc:
        late = exc
    print(f"{ppl:.4f}")
    _print_zero_shot(zero_shot)
    if a.report is not None:
        report = {"ppl": ppl, "windows": int(windows.shape[0]), "protocol": bench.protocol.as_dict(),
                  **bench.source_record()}
        if zero_shot.tasks:
            report["zero_shot"] = zero_shot.as_dict()
            if late is not None:
                report["zero_shot"]["error"] = str(late)
        atomic_write_json(a.report, report)
    if late is not None:
        raise type(late)(f"zero-shot failed: {late}"
                         + ("" if a.report is None else f"; the report {a.report} was written"))
    return 0


def _add_zero_shot_args(p: argparse.ArgumentParser) -> None:
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


def cmd_show(a: argparse.Namespace) -> int:
    from .metric.io import format_formula, resolve_metric
    from .metric.symbolic import to_latex, to_sympy

    from .pruning import SPARSEGPT
    from .errors import MetricError

    if a.metric == SPARSEGPT:
        raise MetricError("sparsegpt is a pruning method with a weight update, not a formula")
    _, tree = resolve_metric(a.metric)
    print(f"formula: {format_formula(tree)}")
    print(f"sympy:   {to_sympy(tree)}")
    print(f"latex:   {to_latex(tree)}")
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    """Dequantize a GGUF file into the cache once, so later commands load it in seconds."""
    from pathlib import Path

    from .errors import ModelError
    from .gguf import checkpoint_for, find_gguf
    from .workbench import default_cache_dir

    path = find_gguf(a.gguf)
    if path is None:
        raise ModelError(f"{a.gguf} is not a .gguf file (nor a directory holding one)")
    source = checkpoint_for(path, Path(a.cache_dir) if a.cache_dir else default_cache_dir(), _log)
    _log(f"checkpoint: {source.checkpoint}")
    print(source.file)
    return 0


def cmd_search(a: argparse.Namespace) -> int:
    from pathlib import Path

    from .errors import ConfigError
    from .search.api import run_search
    from .search.config import SearchConfig, cli_names, resume_refusal

    parser = a._search_parser
    if a.resume is not None and a.out is not None:  # the run's directory is named twice
        raise resume_refusal("--resume", ["--out"])
    if a.resume is None:
        if not a.model and not a.tasks:
            raise ConfigError("search needs --model or --tasks (or --resume DIR to continue a run).")
        if not a.out:
            raise ConfigError("search needs --out DIR for its results (e.g. --out runs/NAME).")
    config = SearchConfig.from_args(a, log=_log)
    entries = run_search(config, SearchConfig.from_args(parser.parse_args([]), log=_log),
                         "--resume", cli_names(a, parser))
    from .files import dumps_json

    print(dumps_json(search_summary(Path(config.out), entries)))
    return 0


def search_summary(out, entries) -> dict:
    """The CLI's JSON line: the best metric, which split each number is on, report per task."""

    from .files import read_json
    from .search.rundir import CHECKPOINT, best_entry

    best = best_entry(entries) if entries else None
    summary = {"out": str(out), "best": best and best.formula, "hall_of_fame": len(entries),
               "fitness": best and best.fitness, "fitness_on": "fitness windows of the selection split",
               "selection": best and best.score, "selection_std": best and best.score_std,
               "selection_on": "selection split, mean over calibration seeds", "report": {}}
    state = read_json(out / CHECKPOINT, "checkpoint") if (out / CHECKPOINT).is_file() else {}
    counts = sorted({r.get("windows") for r in state.get("final", {}).get("selection_rows", [])},
                    key=str)
    if counts and None not in counts:  # per seed, when the calibration windows are left out
        summary["selection_on"] = (f"{'/'.join(map(str, counts))} windows of the selection "
                                   "split, mean over calibration seeds")
    elif counts:  # a run made before the window budgets
        summary["selection_on"] = "whole selection split, mean over calibration seeds"
    from .measure import mean_std

    by: dict = {}
    for r in state.get("final", {}).get("report_rows", []):
        by.setdefault(r["task"], {}).setdefault(r["metric"], []).append(r["ppl"])
        summary["report"].setdefault(r["task"], {"split": r["split"], "windows": r.get("windows")})
    for task, metrics in by.items():
        for metric, values in metrics.items():
            m, sd = mean_std(values)
            label = "best" if best is not None and metric == best.formula else metric
            summary["report"][task][label] = [m if math.isfinite(m) else None,
                                              sd if math.isfinite(sd) else None]
    return summary


def add_task_args(p: argparse.ArgumentParser) -> None:
    """The tasks of a search or a comparison: models x sparsities, or a tasks file."""
    _add_model_args(p, search=True)
    _add_prune_shape(p)
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
    _add_allow_partial(p)


def _add_search_args(p: argparse.ArgumentParser) -> None:
    from .search.config import add_search_flags

    g = p.add_argument_group("search")
    g.add_argument("--out", default=None, help="new run directory, e.g. runs/NAME")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR (its config.json gives every other option)")
    add_search_flags(g, finite_float, window_count)  # one per SearchConfig field, declared beside it


def _version() -> str:
    import importlib.metadata as md

    try:
        return md.version("pruner-zero")
    except md.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="pruner-zero",
                    description="Discover and apply pruning metrics for LLMs.")
    parser.add_argument("--version", action="version", version=f"pruner-zero {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prune", help="prune a model with a metric, evaluate it, optionally save it")
    _add_model_args(p)
    p.add_argument("--metric", required=True,
                   help="magnitude | wanda | gblm | pruner-zero | sparsegpt | a formula such as "
                        "'mul(abs(mul(W, W)), mms(G))' | a metric file: @PATH or a name ending in "
                        ".json (other text is read as a file only if it is no valid formula)")
    _add_prune_shape(p)
    p.add_argument("--save", default=None, help="write the pruned model here (save_pretrained)")
    p.add_argument("--report", default=None, help="write a JSON report here")
    _add_allow_partial(p)
    p.add_argument("--no-dense-ppl", action="store_true",
                   help="skip the dense model's perplexity (one whole evaluation less) and, with "
                        "--tasks, its zero-shot accuracy")
    _add_zero_shot_args(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("eval", help="print the perplexity (and zero-shot accuracy) of a model")
    _add_model_args(p, calibrates=False)
    p.add_argument("--report", default=None, help="write a JSON report here")
    _add_zero_shot_args(p)
    p.set_defaults(func=cmd_eval, _parser=p)

    p = sub.add_parser("search", help="discover a pruning metric by genetic programming",
                       description="Discover a pruning metric by genetic programming and write "
                                   "config.json, checkpoint.json, evaluations.jsonl, "
                                   "hall_of_fame.csv and best_metric.json/.txt into --out.")
    add_task_args(p)
    _add_search_args(p)
    p.set_defaults(func=cmd_search, _search_parser=p)

    p = sub.add_parser("convert", help="dequantize a GGUF model into the cache (once per file); "
                                       "prints the path to give --model")
    p.add_argument("gguf", help="a .gguf file, or a directory holding one")
    p.add_argument("--cache-dir", default=None,
                   help="where the checkpoint goes (default $PRUNER_ZERO_CACHE or "
                        "~/.cache/pruner_zero; give the same --cache-dir to the later commands)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("show", help="print a metric's formula, sympy form and LaTeX")
    p.add_argument("metric", help="built-in name, formula, or metric file (@PATH or NAME.json; "
                                  "other text is a file only if it is no valid formula)")
    p.set_defaults(func=cmd_show)

    from .compare import add_compare_parser
    from .report import add_report_parser

    add_compare_parser(sub)
    add_report_parser(sub)
    return parser


def _terminate_like_interrupt():
    """SIGTERM (timeout, Slurm, docker stop) gets the cleanup of Ctrl-C: temporary files and
    directories are removed and a search says how to resume, instead of a silent death."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        return signal.signal(signal.SIGTERM, interrupt)  # the caller's handler, to restore
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if sys.stdout is None:  # started with standard output closed: the result line would be lost
        _say("error: standard output is closed; the result line would be lost (redirect it to a "
             "file or /dev/null instead)")
        return 2
    previous = _terminate_like_interrupt()
    try:
        return _dispatch(args)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def _say(line: str) -> None:
    """One line on standard error, if there is one."""
    if sys.stderr is not None:
        print(line, file=sys.stderr)


def _dispatch(args: argparse.Namespace) -> int:
    try:
        code = args.func(args)
        sys.stdout.flush()  # a result line that cannot be written is an error, not exit 0
        return code
    except PrunerZeroError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment (disk full, permissions, a name too long): no bug
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {one_line(exc.strerror or str(exc))}{one_line(where)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = ""
        if getattr(args, "command", None) == "search":
            from .files import user_path
            from .search.rundir import CONFIG

            out = getattr(args, "resume", None) or getattr(args, "out", None)
            if out and (user_path(out) / CONFIG).is_file():  # else there is nothing to resume
                hint = f"; continue with: pruner-zero search --resume {out}"
        print(f"interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
