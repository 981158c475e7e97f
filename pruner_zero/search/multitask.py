"""Fitness over several tasks: one ``FitnessEvaluator`` per task (its caches stay exact: a
task's result depends only on its masks), combined into the weighted geometric mean of
ppl / reference ppl (or the worst task's ratio), measured here or by a pool of workers given at
construction."""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import CANDIDATE_ERRORS
from ..measurement import Measurement
from ..tasks import task_fitness
from .candidate import candidate_key, candidate_text
from .fitness import Evaluation, FitnessEvaluator
from .layout import INVALID, OK
from .options import TASK_COMBINES


class MultiTaskEvaluator:
    """Fitness over several tasks: the weighted geometric mean of ppl / reference ppl, or with
    ``combine="worst"`` the largest ratio (a candidate is as good as its worst task).

    One ``FitnessEvaluator`` per task keeps that task's caches (so every cache stays exact:
    a task's result depends only on its masks) and races it against its own bound: the loop's
    bound is a fitness (a ratio), and task t stops once its running ppl exceeds
    race_factor x bound x reference_t. The bound only tightens, so cache replays stay exact.
    Tasks are measured in order; the first one that fails or is stopped ends the candidate.
    """

    def __init__(self, names: list[str], evaluators: list[FitnessEvaluator],
                 references: list[float], weights: list[float], start_rows: list[Measurement] | None = None,
                 pool: Any = None, combine: str = "mean"):
        if not (len(names) == len(evaluators) == len(references) == len(weights)) or not names:
            raise ValueError("one name, evaluator, reference and weight per task")
        self.names, self.evaluators = list(names), list(evaluators)
        self.references, self.weights = list(references), list(weights)
        if combine not in TASK_COMBINES:
            raise ValueError(f"tasks combine by mean or worst, not {combine!r}")
        self.combine = combine  # tasks.task_fitness
        self.race_factor = evaluators[0].race_factor
        self.start_rows = list(start_rows or [])  # baselines on the fitness windows, for a resume
        self.pool = pool  # a WorkerPool: evaluate_many's measurements are made there (None: here)
        self._prefetched: dict[tuple[int, str, float | None], int] = {}  # job -> pool ticket
        self._prefetched_masks: set[str] = set()

    @property
    def pool(self) -> Any:
        return self._pool

    @pool.setter
    def pool(self, pool: Any) -> None:
        self._pool = pool
        for ev in self.evaluators:  # the workers prune for themselves: masks kept here for that
            ev.memo.on = pool is None  # would only hold memory
            if pool is not None:
                ev.memo.clear()

    def evaluate(self, tree, race_bound: float | None = None) -> Evaluation:
        started = time.perf_counter()
        tally = _Tally(candidate_text(tree), candidate_key(tree), len(self.names))
        for t, (name, ev, ref) in enumerate(zip(self.names, self.evaluators, self.references)):
            r = ev.evaluate(tree, self._task_bound(race_bound, t), key=tally.key)
            if not tally.add(name, r, ref):
                return tally.ended(name, r, time.perf_counter() - started)
        return tally.finished(self.names, self.weights, time.perf_counter() - started,
                              self.combine)

    def evaluate_many(self, trees: list, race_bound: float | None = None) -> list[Evaluation]:
        """``evaluate`` of each tree, task by task (a task's candidates go to ``pool`` together);
        per task the same order, caches and bound as one ``evaluate`` after another, so the
        same results."""
        try:
            return self._evaluate_many(trees, race_bound)
        finally:  # prefetched jobs nobody used (a wrong guess, or an error on the way) are
            # dropped, not waited for: their results could never be used
            if self._prefetched and self.pool is not None:
                self.pool.discard(list(self._prefetched.values()))
            self._prefetched.clear()
            self._prefetched_masks.clear()

    def _evaluate_many(self, trees: list, race_bound: float | None) -> list[Evaluation]:
        n = len(trees)
        keys: list[Any] = []
        for t in trees:
            try:
                keys.append(candidate_key(t))
            except CANDIDATE_ERRORS as exc:
                keys.append(exc)
        tallies = [_Tally(candidate_text(t), k, len(self.names)) for t, k in zip(trees, keys)]
        done: list[Any] = [None] * n  # an Evaluation, or the error the candidate raised
        for t, (name, ev, ref) in enumerate(zip(self.names, self.evaluators, self.references)):
            idx = [i for i in range(n) if done[i] is None]
            if not idx:
                break
            bound = self._task_bound(race_bound, t)
            measure = self._measure_with(t, bound)
            results = ev.evaluate_many([trees[i] for i in idx], bound, [keys[i] for i in idx],
                                       measure)
            for i, r in zip(idx, results):
                if isinstance(r, BaseException):
                    done[i] = r
                elif not tallies[i].add(name, r, ref):
                    done[i] = tallies[i].ended(name, r, tallies[i].seconds)
        return [d if d is not None else tally.finished(self.names, self.weights, tally.seconds,
                                                          self.combine)
                for d, tally in zip(done, tallies)]

    def prefetch(self, tree, race_bound: float | None) -> None:
        """Hand the pool, now, the first task's measurement of a candidate the coming
        ``evaluate_many(..., race_bound)`` will want (the loop calls it while it still varies the
        rest of the generation, so the driver's work overlaps the workers'). A job is a function
        of (task, formula, bound), so a wrong guess costs a measurement, never a result."""
        if self.pool is None:
            return
        try:
            key = candidate_key(tree)
        except CANDIDATE_ERRORS:
            return
        formula = candidate_text(tree)
        fp = self.evaluators[0].to_prefetch(tree, formula, key, self._prefetched_masks)
        job = (0, formula, self._task_bound(race_bound, 0))
        if fp is not None:
            self._prefetched_masks.add(fp)
            self._prefetched[job] = self.pool.submit(job)

    def _task_bound(self, race_bound: float | None, task: int) -> float | None:
        """The loop's bound (a fitness) in task ``task``'s perplexity."""
        if race_bound is None or not math.isfinite(race_bound):
            return None
        return race_bound * self.references[task]

    def _measure_with(self, task: int, bound: float | None):
        """Measurements of task ``task`` by the pool (those prefetched already are collected),
        or here when there is none."""
        if self.pool is not None:
            def pooled(formulas: list[str]) -> list:
                tickets = [self._prefetched.pop((task, f, bound), None) for f in formulas]
                return self.pool.gather([self.pool.submit((task, f, bound)) if t is None else t
                                         for t, f in zip(tickets, formulas)])
            return pooled
        ev = self.evaluators[task]

        def here(formulas: list[str]) -> list:
            out = []
            for f in formulas:
                try:
                    out.append(ev.measure_formula(f, bound))
                except CANDIDATE_ERRORS as exc:
                    out.append(exc)
            return out
        return here

    def fingerprint(self, tree) -> str | None:
        """One fingerprint for the masks of every task (None if a task has no valid masks)."""
        return _combine([ev.fingerprint(tree) for ev in self.evaluators], len(self.names))

    def state_dict(self) -> dict:
        return {"tasks": {n: ev.state_dict() for n, ev in zip(self.names, self.evaluators)},
                "start_rows": [r.as_dict() for r in self.start_rows]}

    def load_state_dict(self, state: dict) -> None:
        for n, ev in zip(self.names, self.evaluators):
            ev.load_state_dict(state.get("tasks", {}).get(n, {}))


@dataclass
class _Tally:
    """One candidate's results task by task, and the Evaluation they make: ended by the first
    task that fails or is stopped, else the ratios combined (``tasks.task_fitness``)."""
    formula: str
    key: Any
    tasks: int
    per: dict[str, dict] = field(default_factory=dict)
    fingerprints: list[str | None] = field(default_factory=list)
    kinds: list[str | None] = field(default_factory=list)
    windows: int = 0
    seconds: float = 0.0

    def add(self, name: str, r: Evaluation, reference: float) -> bool:
        """Task ``name``'s result; False when it ends the candidate."""
        ok = r.status == OK
        self.windows += r.windows
        self.seconds += r.seconds
        self.kinds.append(r.cached)
        self.fingerprints.append(r.fingerprint)
        self.per[name] = {"ppl": r.fitness if ok else None, "status": r.status,
                          "ratio": r.fitness / reference if ok else None,
                          "cached": r.cached, "windows": r.windows}
        if not ok:
            self.per[name]["partial"] = r.partial
        return ok

    def ended(self, name: str, r: Evaluation, seconds: float) -> Evaluation:
        return Evaluation(self.formula, self.key, math.inf, r.status, f"task {name}: {r.reason}",
                          seconds, None, _combine(self.fingerprints, self.tasks), self.windows,
                          r.partial, tasks=self.per)

    def finished(self, names: list[str], weights: list[float], seconds: float,
                 combine: str = "mean") -> Evaluation:
        fitness = task_fitness([self.per[n]["ratio"] for n in names], weights, combine)
        cached = None if any(k is None for k in self.kinds) else \
            ("canonical" if all(k == "canonical" for k in self.kinds) else "fingerprint")
        status, reason = (OK, None) if math.isfinite(fitness) else (INVALID, "fitness is not finite")
        return Evaluation(self.formula, self.key, fitness, status, reason, seconds, cached,
                          _combine(self.fingerprints, self.tasks), self.windows, None,
                          tasks=self.per)


def _combine(fingerprints: list[str | None], n: int) -> str | None:
    """The fingerprint over all tasks' masks; None unless every task has one."""
    if len(fingerprints) < n or any(f is None for f in fingerprints):
        return None
    if n == 1:
        return fingerprints[0]
    return hashlib.sha256("|".join(fingerprints).encode()).hexdigest()
