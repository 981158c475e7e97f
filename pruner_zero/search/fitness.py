"""Fitness of a candidate metric: perplexity after pruning with it, at close to the cost of the
forward passes alone. One-time work (model, dense weights, statistics) lives in the Workbench
and Engine; per candidate we only score, mask, apply, measure and restore. Three shortcuts:

- canonical cache: a metric equal to one already seen (same sympy canonical key) reuses its result
  once its mask fingerprint confirms it (equal formulas can round differently and break ties
  differently, and a cache must never change a result);
- mask fingerprint: a metric inducing exactly the masks of one already measured (e.g. |W| and
  log|W|) reuses its result; perplexity is a function of the masks, so this is exact;
- racing: windows are measured in chunks, and a candidate whose running perplexity exceeds
  `race_factor` x the worst hall-of-fame fitness is stopped: status "stopped_early", fitness inf
  (the partial value is kept in `partial`), so it can never enter the hall of fame.

Caches and racing together: a result cached under an earlier, looser bound could have been
stopped under today's bound. So every measurement keeps its trace (the running perplexity at each
chunk boundary), and a cache hit replays today's racing decision on it. The bound only tightens,
so a stopped trace always reaches today's stop point: a cache hit gives exactly what measuring
again would, and turning caches off never changes a fitness.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from ..engine import Engine, undo_kind
from ..errors import MetricError
from ..evaluate import perplexity
from ..masks import Structure
from ..recipe import Recipe
from .candidate import candidate_key, candidate_text, masks_suffix, parse_candidate, recipe_of
from .layout import INVALID, OK, STOPPED
from .memo import MaskMemo

@dataclass
class Evaluation:
    formula: str
    key: str
    fitness: float
    status: str
    reason: str | None
    seconds: float
    cached: str | None
    fingerprint: str | None
    windows: int
    partial: float | None = None  # running ppl when stopped early
    # (windows done, running ppl) at each racing chunk boundary; kept for cache replays only
    trace: list[tuple[int, float]] | None = field(default=None, repr=False)
    tasks: dict | None = None  # per task: ppl, ratio to the reference, status, cached, windows

    def as_dict(self) -> dict:
        d = asdict(self)
        del d["trace"]
        return d


class FitnessEvaluator:
    def __init__(self, bench, structure: Structure, *, fitness_windows: int | None = 128,
                 race_factor: float | None = None, race_chunk: int = 16,
                 canonical_cache: bool = True, fingerprint_cache: bool = True,
                 spread_windows: bool = True, windows: torch.Tensor | None = None,
                 engine: Engine | None = None,
                 engines: Callable[[Recipe], Engine] | None = None):
        if race_factor is not None and race_factor < 1.0:
            raise MetricError(f"--race-factor must be >= 1 (or off), got {race_factor}")
        self.bench = bench
        self.engine = engine or Engine(bench.model, bench.linears, bench.stats, structure,
                                       keep=undo_kind(bench.linears))
        self.engines = engines  # a candidate's own recipe -> its engine (a recipe genome)
        # spread over the split: the fitness of a subset then ranks metrics like the full split
        self.windows = windows if windows is not None else \
            bench.eval_windows(fitness_windows, spread=spread_windows)
        self.race_factor = race_factor
        self.race_chunk = max(1, race_chunk)
        self.use_canonical = canonical_cache
        self.use_fingerprint = fingerprint_cache
        self.by_key: dict[str, dict] = {}
        self.by_fingerprint: dict[str, dict] = {}
        self.counts = {"evaluated": 0, "canonical": 0, "fingerprint": 0, STOPPED: 0, INVALID: 0}
        self.remeasured = 0  # worker measurements of other masks, measured again here
        self._fingerprints: dict[str, str] = {}  # formula -> fingerprint, from fingerprint()
        self.memo = MaskMemo()  # masks from fingerprint(), until evaluate prunes with them

    # -- public --------------------------------------------------------------------------
    def evaluate(self, tree, race_bound: float | None = None, key: str | None = None) -> Evaluation:
        started = time.perf_counter()
        formula = candidate_text(tree)
        key = candidate_key(tree) if key is None else key
        fp, pruned = self._fingerprints.get(formula), False
        engine = self.engine_for(tree)
        try:
            if fp is None:
                try:  # scored, masked and pruned layer by layer; the fingerprint comes with it
                    fp, pruned = engine.prune(tree, formula) + masks_suffix(tree), True
                except (MetricError, RuntimeError, ValueError) as exc:
                    return self._record(Evaluation(formula, key, math.inf, INVALID, str(exc),
                                                   time.perf_counter() - started, None, None, 0))
            hit = self._cache_hit(fp, formula, key, started, race_bound)
            if hit is not None:
                return hit
            if not pruned:
                self._prune(tree, formula)
            ppl, done, stopped, trace = self._measure(race_bound)
        finally:
            engine.restore()
        return self._outcome(formula, key, fp, ppl, done=done, stopped=stopped, trace=trace,
                             seconds=time.perf_counter() - started, race_bound=race_bound)

    def engine_for(self, tree) -> Engine:
        """The engine of a candidate: the run's, or its own recipe's (a recipe genome)."""
        recipe = recipe_of(tree)
        if recipe is None:
            return self.engine
        if self.engines is None:
            raise MetricError(f"{candidate_text(tree)}: this evaluator prunes under one recipe")
        return self.engines(recipe)

    def evaluate_many(self, trees: list, race_bound: float | None, keys: list[str],
                      measure) -> list[Evaluation]:
        """``evaluate`` of each tree in order, with the measurements made by ``measure(formulas)``
        (a pool of workers: one list of (ppl, done, stopped, trace, seconds) per call) and
        everything else here. The caches are consulted and filled in the same order as
        ``evaluate`` would, and the racing bound is the same for the whole list, so the results
        are those of evaluating one tree after another: only who measures changes."""
        formulas = [candidate_text(t) for t in trees]
        fps = [key if isinstance(key, BaseException)  # its key failed: the caller records it
               else self._fingerprint_or_error(tree, formula)
               for tree, formula, key in zip(trees, formulas, keys)]
        first: dict[str, int] = {}  # masks to measure: not cached, first of this list
        for i, (key, fp) in enumerate(zip(keys, fps)):
            if not isinstance(fp, BaseException) and self._to_measure(key, fp, first):
                first[fp] = i
        measured = dict(zip(first, measure([formulas[i] for i in first.values()]))) if first else {}
        out = []
        for formula, key, fp in zip(formulas, keys, fps):
            started = time.perf_counter()
            if isinstance(key, BaseException):
                out.append(key)
                continue
            if isinstance(fp, BaseException):
                out.append(self._record(Evaluation(formula, key, math.inf, INVALID, str(fp), 0.0,
                                                   None, None, 0)))
                continue
            hit = self._cache_hit(fp, formula, key, started, race_bound)
            if hit is not None:
                out.append(hit)
                continue
            m = measured.pop(fp, None) or measure([formula])[0]  # a measurement used once
            if isinstance(m, BaseException):  # as evaluate's caller records it: nothing cached
                out.append(m)
                continue
            out.append(self._measured(formula, key, fp, m, race_bound))
        return out

    def to_prefetch(self, tree, formula: str, key: str, pending: set[str]) -> str | None:
        """The fingerprint of a candidate that ``evaluate_many`` will measure, unless its masks
        are among ``pending`` (being measured already, for the same list); else None. A
        prediction made with the caches as they are now: ``evaluate_many`` decides again."""
        fp = self._fingerprint_or_error(tree, formula)
        return None if isinstance(fp, BaseException) or not self._to_measure(key, fp, pending) \
            else fp

    def _fingerprint_or_error(self, tree, formula: str):
        """The masks' fingerprint (kept for the formula), or the error the metric raised."""
        fp = self._fingerprints.get(formula)
        if fp is None:
            try:
                masks = self.engine_for(tree).packed_masks(tree, formula, walked=self.memo.on)
            except (MetricError, RuntimeError, ValueError) as exc:
                return exc
            fp = self._fingerprints[formula] = masks.fingerprint + masks_suffix(tree)
            self.memo.remember(formula, masks)
        return fp

    def _prune(self, tree, formula: str) -> str:
        """Prune with the masks kept from the fingerprint (the same ones, not scored again), or
        by scoring when they were not kept."""
        masks = self.memo.pop(formula)
        engine = self.engine_for(tree)
        if masks is None:
            return engine.prune(tree, formula) + masks_suffix(tree)
        return engine.prune_with(masks) + masks_suffix(tree)

    def _to_measure(self, key: str, fp: str, pending) -> bool:
        """Whether these masks need a measurement: not among ``pending``, not cached under an
        equal metric with the same masks, nor as identical masks (what ``_cache_hit`` finds)."""
        if fp in pending:
            return False
        stored = self.by_key.get(key) if self.use_canonical else None
        if stored is not None and stored["fingerprint"] == fp:
            return False
        return not (self.use_fingerprint and fp in self.by_fingerprint)

    def _measured(self, formula: str, key: str, fp: str, m, race_bound: float | None) -> Evaluation:
        """The record of a measurement (ppl, done, stopped, trace, seconds, fingerprint)."""
        ppl, done, stopped, trace, seconds, measured_fp = m
        if measured_fp != fp:
            # the worker's masks differ from the ones fingerprinted here: a score that ties up
            # to rounding, and a reduction summed in another order on another thread count.
            # Measured again here, the result is the masks this process (and a run without
            # workers on it) would prune; rare, and the run stays independent of the workers.
            self.remeasured += 1
            ppl, done, stopped, trace, seconds, measured_fp = self.measure_formula(formula,
                                                                                   race_bound)
            if measured_fp != fp:
                raise RuntimeError(f"{formula}: pruning twice here gave two different masks")
        return self._outcome(formula, key, fp, ppl, done=done, stopped=stopped,
                             trace=None if trace is None else [tuple(x) for x in trace],
                             seconds=seconds, race_bound=race_bound)

    def _outcome(self, formula: str, key: str, fp: str, ppl: float, *, done: int, stopped: bool,
                 trace, seconds: float, race_bound: float | None) -> Evaluation:
        """The recorded Evaluation of a measurement: stopped by racing, not finite, or OK."""
        status, reason, partial = OK, None, None
        if stopped:
            status, partial, ppl = STOPPED, ppl, math.inf
            reason = self._stop_reason(done, partial, race_bound)
        elif not math.isfinite(ppl):
            status, reason, ppl = INVALID, "perplexity is not finite", math.inf
        return self._record(Evaluation(formula, key, ppl, status, reason, seconds, None, fp, done,
                                       partial, trace))

    def measure_formula(self, formula: str, race_bound: float | None) -> tuple:
        """Prune with a formula, measure, restore: a worker's part of ``evaluate_many``."""
        started = time.perf_counter()
        tree = parse_candidate(formula)
        fp = self._prune(tree, formula)
        try:
            ppl, done, stopped, trace = self._measure(race_bound)
        finally:
            self.engine_for(tree).restore()
        return ppl, done, stopped, trace, time.perf_counter() - started, fp

    def fingerprint(self, tree) -> str | None:
        """The mask fingerprint of a metric, or None when it yields no valid masks. The search
        uses it to tell rank-equivalent metrics apart from new ones before evaluating them; an
        `evaluate` of the same formula then finds a fingerprint-cache hit without scoring again."""
        fp = self._fingerprint_or_error(tree, candidate_text(tree))
        return None if isinstance(fp, BaseException) else fp

    def measure_ppl(self, tree) -> float:
        """Perplexity on the fitness windows, without racing or caches: what a baseline is
        compared with (same windows and batches as every candidate)."""
        engine = self.engine_for(tree)
        engine.prune(tree, candidate_text(tree))
        try:
            return self._measure(None)[0]
        finally:
            engine.restore()

    def state_dict(self) -> dict:
        return {"by_key": self.by_key, "by_fingerprint": self.by_fingerprint,
                "counts": dict(self.counts)}

    def load_state_dict(self, state: dict) -> None:
        self.by_key = dict(state.get("by_key", {}))
        self.by_fingerprint = dict(state.get("by_fingerprint", {}))
        self.counts.update(state.get("counts", {}))

    # -- internals -----------------------------------------------------------------------
    def _cache_hit(self, fp: str, formula: str, key: str, started: float,
                   race_bound: float | None) -> Evaluation | None:
        """The stored result of an equal metric with the same masks (checked, since float
        rounding can break ties differently), else of identical masks, else None: either is
        exactly what measuring would give. A hit lets the candidate's kept masks go."""
        stored = self.by_key.get(key) if self.use_canonical else None
        if stored is not None and stored["fingerprint"] == fp:
            self.counts["canonical"] += 1
            self.memo.pop(formula)
            return self._reuse(stored, formula, key, "canonical", started, race_bound)
        hit = self._fingerprint_hit(fp, formula, key, started, race_bound)
        if hit is not None:
            self.memo.pop(formula)
        return hit

    def _fingerprint_hit(self, fp: str | None, formula: str, key: str, started: float,
                         race_bound: float | None) -> Evaluation | None:
        """The stored result of identical masks, if any (also filed under this canonical key)."""
        if not self.use_fingerprint or fp is None or fp not in self.by_fingerprint:
            return None
        self.counts["fingerprint"] += 1
        stored = self.by_fingerprint[fp]
        if self.use_canonical:
            self.by_key[key] = stored
        return self._reuse(stored, formula, key, "fingerprint", started, race_bound)

    def _limit(self, race_bound: float | None) -> float:
        """Running perplexity above which a candidate is stopped (inf: racing off or no bound)."""
        if self.race_factor is None or race_bound is None or not math.isfinite(race_bound):
            return math.inf
        return self.race_factor * race_bound

    def _stop_reason(self, done: int, partial: float, race_bound: float) -> str:
        return (f"stopped after {done}/{self.windows.shape[0]} windows: running ppl "
                f"{partial:.3f} > {self.race_factor:g} x bound {race_bound:.3f} (the worst "
                "hall-of-fame fitness in this task's perplexity)")

    def _measure(self, race_bound: float | None
                 ) -> tuple[float, int, bool, list[tuple[int, float]] | None]:
        """(ppl, windows measured, stopped early, trace) of the model as pruned now. With racing on, the trace is kept even without a bound (generation 0), so a
        later cache hit can replay a tighter bound on it."""
        racing = self.race_factor is not None
        limit = self._limit(race_bound)
        n = self.windows.shape[0]
        state = {"stopped": False, "done": n}
        trace: list[tuple[int, float]] = []

        def stop(running: float, done: int) -> bool:
            state["done"] = done
            if done < n and done % self.race_chunk == 0:
                trace.append((done, running))
                state["stopped"] = running > limit
            return state["stopped"]

        batch = math.gcd(self.bench.protocol.batch_size, self.race_chunk) if racing \
            else self.bench.protocol.batch_size
        with torch.no_grad():
            ppl = perplexity(self.bench.model, self.windows, batch, False, stop if racing else None)
        return ppl, state["done"], state["stopped"], (trace if racing else None)

    def _record(self, result: Evaluation) -> Evaluation:
        self.counts["evaluated"] += 1
        if result.status in (STOPPED, INVALID):
            self.counts[result.status] += 1
        stored = self._stored(result)
        if self.use_canonical:
            self.by_key[result.key] = stored
        if self.use_fingerprint and result.fingerprint is not None:
            self.by_fingerprint[result.fingerprint] = stored
        return result

    @staticmethod
    def _stored(result: Evaluation) -> dict:
        return {k: getattr(result, k) for k in ("fitness", "status", "reason", "fingerprint",
                                                 "windows", "partial", "trace")}

    def _reuse(self, stored: dict, formula: str, key: str, how: str, started: float,
               race_bound: float | None) -> Evaluation:
        """A stored result as measuring again under ``race_bound`` would give it: the racing
        decision is replayed on the stored trace (stopped at its first chunk above the limit)."""
        result = Evaluation(formula=formula, key=key, fitness=stored["fitness"],
                            status=stored["status"], reason=stored["reason"], seconds=0.0,
                            cached=how, fingerprint=stored["fingerprint"],
                            windows=stored["windows"], partial=stored.get("partial"),
                            trace=stored.get("trace"))
        limit = self._limit(race_bound)
        if math.isfinite(limit):  # results without a trace (racing off, no masks) stay as stored
            for done, running in result.trace or ():
                if running > limit:
                    result.status, result.fitness, result.partial = STOPPED, math.inf, running
                    result.windows = done
                    result.reason = self._stop_reason(done, running, race_bound)
                    break
        result.seconds = time.perf_counter() - started
        return result
