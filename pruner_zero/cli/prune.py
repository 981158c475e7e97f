"""`pruner-zero prune` and `eval`: one model, one metric (or none), its perplexity and report."""
from __future__ import annotations

import argparse

from ..errors import PrunerZeroError
from .common import (CALIBRATION_FLAGS, add_allocation_args, add_allow_partial, add_model_args,
                     add_prune_shape, add_update_args, add_zero_shot_args, allocation_from, cache_from,
                     log, runtime_from)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prune", help="prune a model with a metric, evaluate it, optionally save it")
    add_model_args(p)
    p.add_argument("--metric", required=True,
                   help="magnitude | wanda | gblm | pruner-zero | sparsegpt | a formula such as "
                        "'mul(abs(mul(W, W)), mms(G))' | a metric file: @PATH or a name ending in "
                        ".json (other text is read as a file only if it is no valid formula)")
    add_prune_shape(p)
    add_allocation_args(p)
    add_update_args(p)
    p.add_argument("--save", default=None, help="write the pruned model here (save_pretrained)")
    p.add_argument("--report", default=None, help="write a JSON report here")
    add_allow_partial(p)
    p.add_argument("--no-dense-ppl", action="store_true",
                   help="skip the dense model's perplexity (one whole evaluation less) and, with "
                        "--tasks, its zero-shot accuracy")
    add_zero_shot_args(p)
    p.set_defaults(func=run_prune)

    p = sub.add_parser("eval", help="print the perplexity (and zero-shot accuracy) of a model")
    add_model_args(p, calibrates=False)
    p.add_argument("--report", default=None, help="write a JSON report here")
    add_zero_shot_args(p)
    p.set_defaults(func=run_eval, _parser=p)


def workbench_from(a: argparse.Namespace):
    """The model and data of a prune or an eval, as the flags say."""
    from ..workbench import Protocol, Workbench, default_cache_dir

    protocol = Protocol(model=a.model, data_dir=a.data_dir, calib_split=a.calib_split,
                        eval_split=a.eval_split, eval_windows=a.eval_windows,
                        nsamples=a.nsamples, seqlen=a.seqlen, seed=a.seed,
                        calibration=getattr(a, "calibration", "dense"), calib_data=a.calib_data,
                        text_join=a.text_join, **runtime_from(a).as_dict())
    return Workbench(protocol, cache_dir=cache_from(a, default_cache_dir()),
                     progress=not a.quiet, log=log)


def run_prune(a: argparse.Namespace) -> int:
    from ..files import dumps_json
    from ..masks import parse_structure
    from ..pruning import planned, prune
    from ..zeroshot import ZeroShot

    shape = parse_structure(a.structure, a.sparsity, a.compare)  # cheap checks before loading
    allocation, update = allocation_from(a), a.update
    planned(a.metric, shape, allocation, update)
    zero_shot = ZeroShot.checked(a.tasks, a.tasks_include, a.tasks_limit)  # before the model
    result = prune(workbench_from(a), a.metric, a.sparsity, a.structure, a.compare, save=a.save,
                   report=a.report, dense=not a.no_dense_ppl, allow_partial=a.allow_partial,
                   log=log, zero_shot=zero_shot, allocation=allocation, update=update)
    print(dumps_json({k: result.get(k) for k in ("metric", "ppl_dense", "ppl", "sparsity",
                                                  "windows", "seconds")}))
    print_zero_shot(zero_shot)
    return 0


def print_zero_shot(zero_shot) -> None:
    if zero_shot.results:
        from ..zeroshot import summary_table

        print(summary_table(zero_shot.results), flush=True)


def run_eval(a: argparse.Namespace) -> int:
    from ..files import atomic_write_json, check_writable_file
    from ..gguf import find_gguf
    from ..zeroshot import ZeroShot

    ignored = CALIBRATION_FLAGS if find_gguf(a.model) is None else \
        [f for f in CALIBRATION_FLAGS if f not in ("--cache-dir", "--no-cache")]  # the conversion's
    given = [f for f in ignored if getattr(a, f[2:].replace("-", "_")) !=
             a._parser.get_default(f[2:].replace("-", "_"))]
    if given:
        log(f"warning: eval calibrates nothing; {', '.join(given)} ignored")
    zero_shot = ZeroShot.checked(a.tasks, a.tasks_include, a.tasks_limit)
    if a.report is not None:
        check_writable_file(a.report, "--report")
    bench = workbench_from(a)
    windows = bench.report_windows()
    ppl = bench.perplexity(windows)
    log(f"perplexity on {bench.windows_note(windows.shape[0])}")
    late = None
    try:  # the perplexity is finished: a task failing now does not cost the report
        zero_shot.measure(bench, "model", log)
    except PrunerZeroError as exc:
        late = exc
    print(f"{ppl:.4f}")
    print_zero_shot(zero_shot)
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
