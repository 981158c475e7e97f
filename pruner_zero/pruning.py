"""The Python API the CLI is a thin shell over: prune a model with a metric, measure it, save it."""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .allocation import Allocation, block_index, linear_sparsities
from .engine import Engine, measure_sparsity
from .errors import ConfigError, MetricError, describe
from .files import RunLock, atomic_write_json, check_writable_dir, check_writable_file, user_path
from .masks import Structure, check_fits, parse_structure
from .methods import resolve_metric_spec
from .recipe import Recipe, merged
from .metric.registry import statistics_read
from .metric.tree import leaves
from .model import (PRUNING_JSON, check_linear_share, decoder_parameters, layers_prefix,
                    save_pruned, versions)
from .sparsegpt import BLOCKSIZE as SPARSEGPT_BLOCK, SPARSEGPT, sparsegpt_prune
from .workbench import Protocol, Workbench
from .zeroshot import ZeroShot


def sparsegpt_structure(shape: Structure) -> str:
    """How SparseGPT's masks are chosen, as reports record it (not --compare's row or layer)."""
    if shape.is_nm:
        return shape.describe()
    return (f"unstructured {shape.sparsity:g} per block of {SPARSEGPT_BLOCK} input columns "
            "(SparseGPT)")


def planned(metric: str, shape: Structure, allocation: Allocation | None = None,
            update: str | None = None) -> tuple[str, Any, Recipe]:
    """(display formula, tree, recipe) of a prune, checked before any model loads. SparseGPT is
    a method, not a tree: (its name, None, plain). A recipe file brings its allocation and
    update; flags may repeat them, not contradict them."""
    spec = resolve_metric_spec(metric)
    sparsegpt = spec.metric == SPARSEGPT
    if sparsegpt and shape.compare != "row":
        raise ConfigError("sparsegpt selects its own masks (by the OBS error, per block of "
                          f"{SPARSEGPT_BLOCK} input columns over all rows): --compare "
                          f"{shape.compare} does not apply to it")
    recipe = merged(spec.recipe, allocation, update, where=f"the metric {metric}")
    if recipe.update is not None and sparsegpt:
        raise ConfigError(f"--update {recipe.update} runs SparseGPT's solver with a metric's "
                          "masks; sparsegpt updates its own (leave --update out)")
    kind = recipe.allocation.kind
    recipe.allocation.check_fits(shape)
    if kind != "uniform" and sparsegpt:
        raise ConfigError(f"--allocation {kind} applies to a metric's masks; sparsegpt "
                          "chooses its own (uniform)")
    return (SPARSEGPT, None, recipe) if sparsegpt else (spec.formula, spec.metric, recipe)


def prune(model: str | Workbench, metric: str, sparsity: float | None = 0.5,
          structure: str = "unstructured", compare: str = "row", *, save: str | Path | None = None,
          report: str | Path | None = None, dense: bool = True, allow_partial: bool = False,
          log=print, tasks: str | list[str] | None = None, tasks_include: list[str] = (),
          tasks_limit: int | None = None, zero_shot: "ZeroShot | None" = None,
          allocation: Allocation | None = None, update: str | None = None,
          **protocol) -> dict:
    """Prune with `metric` (built-in name, metric file, formula, or "sparsegpt") and return the
    report: dense and pruned perplexity, achieved sparsity, formula, seconds and protocol; with
    `tasks` (lm-eval task names), zero-shot accuracy of the dense (unless not `dense`) and the
    pruned model, scored in memory. ``allocation`` spreads the sparsity over the blocks (None:
    uniform); ``update="obs"`` reconstructs the kept weights under the metric's masks,
    ``"sweep"`` lets the metric choose each block's mask inside that reconstruction; ``"lsq"``,
    ``"sweep-lsq"`` solve the kept weights exactly under those masks (``recipe.UPDATES``).
    ``save`` is claimed before the model loads: a second prune to the same directory
    is refused at once, not after all its work."""
    started = time.time()
    shape = parse_structure(structure, sparsity, compare)
    # a bad metric or recipe fails before any model is loaded
    formula, tree, recipe = planned(metric, shape, allocation, update)
    check_output_paths(save, report)
    if zero_shot is None:  # unknown tasks fail here, before any model is loaded
        zero_shot = ZeroShot.checked(tasks, tasks_include, tasks_limit)
    with _claim(save):
        check_output_paths(save, report)  # again: a prune that held the claim may have saved
        bench = model if isinstance(model, Workbench) else \
            Workbench(Protocol(model=model, **protocol), log=log)
        return _pruned(bench, metric, formula, tree, shape, save=save, report=report,
                       dense=dense, allow_partial=allow_partial, log=log, zero_shot=zero_shot,
                       started=started, recipe=recipe)


def _claim(save: str | Path | None):
    """A lock file beside the directory to save (gone when the prune ends; after a SIGKILL it
    stays, unlocked, and the next prune to that path takes it over)."""
    if save is None:
        return nullcontext()
    p = user_path(save)
    return RunLock(p.parent, "prune --save", name=f".{p.name}.saving", subject=save, remove=True)


def _pruned(bench: Workbench, metric: str, formula: str, tree, shape: Structure, *, save,
            report, dense: bool, allow_partial: bool, log, zero_shot: ZeroShot,
            started: float, recipe: Recipe) -> dict:
    """The work of ``prune`` once its inputs are checked and its --save path is claimed."""
    structure_done = shape.describe() if tree is not None else sparsegpt_structure(shape)
    result: dict = {"metric": formula, "metric_spec": metric, "structure": structure_done,
                    "requested_sparsity": shape.sparsity, "protocol": bench.protocol.as_dict(),
                    **bench.source_record()}
    if tree is None:  # what SparseGPT does, whatever --calibration says
        result["protocol"]["calibration"] = "sequential"
    windows = bench.report_windows()  # a missing or too short evaluation split fails here
    result["windows"] = int(windows.shape[0])
    result["windows_note"] = bench.windows_note(result["windows"])
    check_fits((m.in_features for m in bench.linears.values()), shape)
    result["linear_share"] = check_linear_share(bench.model, bench.linears, allow_partial, log)
    engine = _engine(bench, tree, formula, shape, recipe)  # a bad metric fails now
    if recipe.update is not None:
        result["update"] = recipe.update
    if engine is not None and engine.sparsities is not None:
        result["allocation"] = _allocation_record(recipe.allocation, engine.sparsities,
                                                  layers_prefix(bench.model), log)
    if dense:
        result["ppl_dense"] = bench.dense_perplexity()
        log(f"dense perplexity: {result['ppl_dense']:.3f} (on {result['windows_note']})")
        zero_shot.measure(bench, "dense", log)
    if engine is None:
        sparsegpt_prune(bench.model, bench.calib, shape, bench.progress)
    else:
        engine.prune(tree, formula)
    result.update(_achieved(bench, shape, log))
    ppl = bench.perplexity(windows)
    if not math.isfinite(ppl):
        log("warning: the pruned model's perplexity is not finite")
    result["ppl"] = ppl
    log(f"pruned perplexity ({formula}): {ppl:.3f} (on {result['windows_note']})")
    late = None
    try:  # the pruned model and its perplexity are finished: a task failing now costs neither
        zero_shot.measure(bench, "pruned", log)
    except ConfigError as exc:
        late = exc
    if zero_shot.tasks:
        result["zero_shot"] = zero_shot.as_dict()
        if late is not None:
            result["zero_shot"]["error"] = str(late)
    return _outputs(bench, result, save=save, report=report, late=late, log=log,
                    started=started)


def _engine(bench: Workbench, tree, formula: str, shape: Structure,
            recipe: Recipe) -> Engine | None:
    """The engine of a metric's prune, checked on the first layer (None for SparseGPT, whose
    calibration is loaded instead): either fails before the long evaluations."""
    if tree is None:
        _ = bench.calib
        return None
    allocation, update = recipe.allocation, recipe.update
    needed = statistics_read(leaves(tree)) | ({"X"} if allocation.kind == "owl" else set())
    stats = bench.statistics(needed)  # only what the metric and the allocation read
    sparsities = linear_sparsities(allocation, shape.sparsity, bench.linears, stats,
                                   layers_prefix(bench.model))
    # a prune that stays: each layer is scored, masked and pruned in place, nothing is kept
    # to restore (no copy of the model); the dense perplexity is measured before it
    walks = bench.protocol.calibration == "sequential" or update is not None
    engine = Engine(bench.model, bench.linears, stats, shape, bench.protocol.calibration,
                    bench.calib if walks else None, bench.progress, keep=None,
                    sparsities=sparsities, update=update)
    engine.check(tree, formula)
    return engine


def _allocation_record(allocation: Allocation, sparsities: dict[str, float], prefix: str,
                       log) -> dict:
    """What the report says of an allocation: its options and each block's sparsity (their
    mean is the requested sparsity)."""
    blocks = {block_index(n, prefix): s for n, s in sparsities.items()}
    per_block = [blocks[b] for b in sorted(blocks)]
    mean = math.fsum(per_block) / len(per_block)
    log(f"allocation: {allocation.describe()}: block sparsities {min(per_block):.4f} to "
        f"{max(per_block):.4f}, mean {mean:.6f}")
    return {**allocation.as_dict(), "block_sparsity": per_block, "mean_block_sparsity": mean}


def _achieved(bench: Workbench, shape: Structure, log) -> dict:
    """The sparsity the prune reached, overall, over the decoder and per layer."""
    achieved = measure_sparsity(bench.linears)
    log(f"sparsity: {achieved.overall:.4f} over {len(achieved.per_layer)} layers "
        f"({achieved.zeros}/{achieved.total} weights)")
    if achieved.zeros == 0 or abs(achieved.overall - shape.sparsity) > 0.01:
        log(f"warning: {shape.sparsity:g} was asked for and {achieved.overall:.4f} was achieved "
            "(a row prunes a whole number of its weights)")
    return {"sparsity": achieved.overall,
            "decoder_sparsity": achieved.zeros / max(decoder_parameters(bench.model), 1),
            "sparsity_per_layer": achieved.per_layer}


def _outputs(bench: Workbench, result: dict, *, save, report, late: Exception | None, log,
             started: float) -> dict:
    """--save, then --report (written whatever happened to the save), then the late errors."""
    save_error = None
    if save is not None:
        how = {k: result[k] for k in ("metric", "metric_spec", "structure", "requested_sparsity",
                                      "sparsity", "allocation", "update", "protocol",
                                      "model_source") if k in result}
        try:
            save_pruned(bench.model, bench.tokenizer, save, {**how, "versions": versions()})
        except Exception as exc:  # a full disk: OSError, or safetensors' own error type
            save_error = result["save_error"] = describe(exc)
        else:
            result["saved_to"] = str(user_path(save))
            log(f"saved pruned model to {save}")
    result["seconds"] = round(time.time() - started, 2)
    if report is not None:
        atomic_write_json(report, result)
    if save_error is not None:
        raise ConfigError(f"cannot save the pruned model to {save}: {save_error}"
                          + _written([("the report", report)]))
    if late is not None:
        raise ConfigError(f"zero-shot of the pruned model failed: {late}"
                          + _written([("the pruned model", save), ("the report", report)]))
    return result


def _written(outputs: list[tuple[str, str | Path | None]]) -> str:
    """'; the report R was written' (or 'X and Y were'), for the outputs that were given."""
    kept = [f"{what} {path}" for what, path in outputs if path is not None]
    if not kept:
        return ""
    return f"; {' and '.join(kept)} {'was' if len(kept) == 1 else 'were'} written"


def check_output_paths(save: str | Path | None, report: str | Path | None) -> None:
    """Refuse unusable output paths before any work, so nothing finished is lost at the end:
    the report's directory and the saved model's parent are created and written to now."""
    if save is not None and report is not None:
        r, d = user_path(report).resolve(), user_path(save).resolve()
        if r == d or d in r.parents:
            raise ConfigError(f"--report {report} is inside --save {save}; the saved model's "
                              "directory holds the model alone: put the report elsewhere")
    if save is not None:
        p = user_path(save)
        if p.is_symlink():  # the save is a rename into place: a link would be replaced or fail
            raise ConfigError(f"--save {save} is a symbolic link; give the directory it points "
                              "to, or a new path")
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--save {save} is a file; give a new directory")
        if p.is_dir() and any(p.iterdir()):
            if (p / "config.json").is_file() and not (p / PRUNING_JSON).is_file():
                raise ConfigError(f"--save {save} holds an incomplete model (weights without "
                                  f"{PRUNING_JSON}: a save that was interrupted, or not ours); "
                                  "remove it or choose a new directory")
            raise ConfigError(f"--save {save} exists and is not empty; choose a new directory")
        check_writable_dir(p.parent, "--save")
    if report is not None:
        check_writable_file(report, "--report")


__all__ = ["prune", "planned", "Protocol", "Workbench", "MetricError"]
