"""The generational GP loop: select, vary, simplify (OOS), evaluate, keep the elite, checkpoint.

It touches files only through a ``RunDir`` and the model only through the
evaluator's ``evaluate(tree, race_bound)``, so tests can drive it with a fake
evaluator.  All randomness is Python's global ``random`` (what DEAP uses); it
is seeded once, saved in every checkpoint and shielded from whatever the
evaluator does, so a resumed run continues exactly where it left off.
"""
from __future__ import annotations

import math
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Protocol

from deap import gp, tools

from pruner_zero.errors import CANDIDATE_ERRORS, ConfigError
from pruner_zero.metric.space import SearchSpace
from pruner_zero.recipe import parse_tag
from pruner_zero.search.candidate import candidate_key, candidate_text, recipe_of
from pruner_zero.search.operators import build_toolbox, make_individual, shrink_neighbours
from pruner_zero.search.checkpoint import (generation_record, new_hof, random_state_kept,
                                           restore_generation)
from pruner_zero.search.rundir import INVALID, OK, RunDir
from pruner_zero.search.settings import GPSettings


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Evaluator(Protocol):
    """What the loop needs from a fitness evaluator (see ``search.fitness``)."""

    race_factor: float | None

    def evaluate(self, tree: gp.PrimitiveTree, race_bound: float | None = None) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class GenerationStats:
    """Summary of one generation, logged and kept in the checkpoint."""

    generation: int
    best: float
    median: float
    evaluated: int
    valid: int
    cached: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GPResult:
    """Hall of fame (best first), last generation done, and per-generation stats."""

    hall_of_fame: list[Any]
    generation: int
    history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------ individuals

def _genes(ind: Any) -> tuple[str, Any]:
    """What a variation may change: the tree and the recipe gene."""
    return str(ind), recipe_of(ind)


def _invalidate(ind: Any) -> None:
    """Forget fitness and what the evaluator said: the tree changed."""
    del ind.fitness.values
    ind.key = ind.fingerprint = ind.status = None


def eligible(population: Iterable[Any]) -> list[Any]:
    """Individuals that may enter the hall of fame: fully measured, finite fitness.

    Racing-stopped ones carry only a partial perplexity and must never enter it.
    """
    return [i for i in population
            if i.fitness.valid and i.status == OK and math.isfinite(i.fitness.values[0])]


# --------------------------------------------------------------- evaluation

def evaluate_candidate(evaluator: Evaluator, ind: Any, race_bound: float | None) -> dict[str, Any]:
    """Evaluate one individual, set its fitness, return the evaluation record.

    A failing candidate gets fitness inf and its reason; the GP's random state is
    restored afterwards so the evaluator can never shift the search.
    """
    started = time.perf_counter()
    with random_state_kept():
        try:
            record = dict(evaluator.evaluate(ind, race_bound).as_dict())
        except CANDIDATE_ERRORS as exc:
            record = _failed(ind, exc, time.perf_counter() - started)
    return _set_fitness(ind, record)


def _failed(ind: Any, exc: BaseException, seconds: float) -> dict[str, Any]:
    """The record of a candidate whose evaluation raised: invalid, nothing cached."""
    return {"formula": candidate_text(ind), "key": None, "fitness": math.inf, "status": INVALID,
            "reason": f"evaluation failed: {type(exc).__name__}: {exc}", "seconds": seconds,
            "cached": None, "fingerprint": None, "windows": 0}


def _set_fitness(ind: Any, record: dict[str, Any]) -> dict[str, Any]:
    fitness = float(record.get("fitness", math.inf))
    if math.isnan(fitness):
        fitness = math.inf
        record.update(fitness=fitness, status=INVALID, reason=record.get("reason") or "fitness is NaN")
    ind.fitness.values = (fitness,)
    ind.status = record.get("status", INVALID)
    ind.key = record.get("key") or candidate_text(ind)
    ind.fingerprint = record.get("fingerprint")
    return record


def _evaluate(generation: int, individuals: list[Any], toolbox: Any, evaluator: Evaluator, run: RunDir,
              race_bound: float | None, progress: bool, desc: str | None = None) -> tuple[int, int, int]:
    """Simplify (OOS) and evaluate the individuals without fitness; (evaluated, valid, cached)."""
    from tqdm.auto import tqdm

    todo = [i for i in individuals if not i.fitness.valid]
    for ind in todo:
        toolbox.simplify(ind)
    valid = cached = 0
    if getattr(evaluator, "pool", None) is not None and todo:
        # a pool of workers measures the generation's candidates side by side; the bound is
        # this generation's for all of them, so every record is what one-by-one would give
        with random_state_kept():
            records = [_set_fitness(ind, _failed(ind, e, 0.0) if isinstance(e, BaseException)
                                    else dict(e.as_dict()))
                       for ind, e in zip(todo, evaluator.evaluate_many(todo, race_bound))]
    else:
        records = (evaluate_candidate(evaluator, ind, race_bound)
                   for ind in tqdm(todo, desc=desc or f"generation {generation}", unit="metric",
                                   disable=not progress, leave=False, file=sys.stderr))
    for ind, record in zip(todo, records):
        run.append_evaluation({"generation": generation, "size": len(ind), **record})
        valid += ind.status == OK and math.isfinite(ind.fitness.values[0])
        cached += record.get("cached") is not None
    return len(todo), valid, cached


NOVELTY_TRIES = 5
"""Extra mutations an offspring gets while it repeats a metric the search has already tried."""


def _identity(toolbox: Any, ind: Any, evaluator: Any = None) -> set[str]:
    """What makes two individuals the same metric: the canonical key of the simplified tree and,
    when the evaluator can tell, the masks it induces (rank-equivalent metrics share them)."""
    toolbox.simplify(ind)
    ident = {"key:" + candidate_key(ind)}
    fingerprint = getattr(evaluator, "fingerprint", None)
    if fingerprint is not None:
        fp = fingerprint(ind)
        if fp is not None:
            ident.add("masks:" + fp)
    return ident


def _prefetch(evaluator: Any, bound: float | None) -> Callable[[Any], None] | None:
    """With a pool of workers: hand it each offspring as soon as it is final, so the workers
    measure while the driver still varies (and fingerprints) the rest of the generation. The
    GP's random state is kept, so this never shifts the search."""
    if getattr(evaluator, "pool", None) is None:
        return None

    def ready(ind: Any) -> None:
        if not ind.fitness.valid:
            with random_state_kept():
                evaluator.prefetch(ind, bound)
    return ready


def _vary(toolbox: Any, parents: list[Any], cx_prob: float, mut_prob: float,
          tried: set[str], evaluator: Any = None,
          ready: Callable[[Any], None] | None = None) -> list[Any]:
    """Clone the parents, cross pairs and mutate; a tree that changed loses its fitness.

    An offspring that repeats a metric in ``tried`` (canonical keys and mask fingerprints of every
    metric this search has put into a population) is mutated again, up to NOVELTY_TRIES times: a repeat costs little
    to evaluate but takes a slot that could explore. ``tried`` is the loop's own record (kept in
    the checkpoint), never the evaluator's caches, so turning caches off cannot change the course
    of a search. The keys of the returned offspring are added to ``tried``; ``ready`` is told
    of each offspring once it is final.
    """
    offspring = [toolbox.clone(p) for p in parents]
    for i in range(1, len(offspring), 2):
        if random.random() < cx_prob:
            before = (_genes(offspring[i - 1]), _genes(offspring[i]))
            offspring[i - 1], offspring[i] = toolbox.mate(offspring[i - 1], offspring[i])
            for j, old in zip((i - 1, i), before):
                if _genes(offspring[j]) != old:
                    _invalidate(offspring[j])
    for i in range(len(offspring)):
        if random.random() < mut_prob:
            old = _genes(offspring[i])
            offspring[i], = toolbox.mutate(offspring[i])
            if _genes(offspring[i]) != old:
                _invalidate(offspring[i])
    seen = tried
    for i in range(len(offspring)):
        ident = _identity(toolbox, offspring[i], evaluator)
        for _ in range(NOVELTY_TRIES):
            if not ident & seen:
                break
            old = _genes(offspring[i])
            offspring[i], = toolbox.mutate(offspring[i])
            if _genes(offspring[i]) != old:
                _invalidate(offspring[i])
            ident = _identity(toolbox, offspring[i], evaluator)
        seen |= ident
        if ready is not None:  # final: no later step changes it
            ready(offspring[i])
    return offspring


def _polish_candidates(toolbox: Any, hof: tools.HallOfFame, top: int, tried: set[str],
                       evaluator: Any) -> list[Any]:
    """Shrink neighbours of the ``top`` best metrics that the search has not tried (deterministic)."""
    out = []
    for best in list(hof)[:top]:
        for tree in shrink_neighbours(best):
            ind = make_individual(tree)
            ind.recipe = recipe_of(best)  # a simpler metric under the same recipe
            ident = _identity(toolbox, ind, evaluator)
            if ident & tried:
                continue
            tried |= ident
            out.append(ind)
    return out


def _race_bound(evaluator: Evaluator, hof: tools.HallOfFame, size: int) -> float | None:
    """Worst fitness of a full hall of fame when racing is on, else None."""
    if getattr(evaluator, "race_factor", None) is None or len(hof) < size:
        return None
    return float(hof[-1].fitness.values[0])


def _stats(generation: int, population: list[Any], counts: tuple[int, int, int],
           seconds: float) -> GenerationStats:
    finite = sorted(i.fitness.values[0] for i in population
                    if i.fitness.valid and math.isfinite(i.fitness.values[0]))
    return GenerationStats(generation, finite[0] if finite else math.inf,
                           statistics.median(finite) if finite else math.inf,
                           counts[0], counts[1], counts[2], round(seconds, 3))


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "inf"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _progress_line(label: str, s: GenerationStats, elapsed: float | None = None,
                   left: float | None = None) -> str:
    """One log line per step; the clock (elapsed, estimated time left) only when ``elapsed``."""
    line = (f"{label}: best {_fmt(s.best)}  median {_fmt(s.median)}  "
            f"valid {s.valid}/{s.evaluated}  cache hits {s.cached}  {s.seconds:.1f}s")
    if elapsed is None:
        return line
    eta = "?" if left is None else _duration(left)
    return f"{line}  elapsed {_duration(elapsed)}  left ~{eta}"


# --------------------------------------------------------------------- loop

def run_gp(space: SearchSpace, evaluator: Evaluator, settings: GPSettings, run: RunDir,
           seeds: Iterable[gp.PrimitiveTree] = (), progress: bool = True,
           log: Callable[[str], None] = _stderr) -> GPResult:
    """Run (or resume from ``run``'s checkpoint) the GP search; returns the hall of fame.

    Generation 0 evaluates the initial population (``seeds`` first, then ramped
    half-and-half trees); each later generation keeps the ``elite`` best of the
    hall of fame unchanged and fills the rest with tournament-selected, crossed
    and mutated offspring.  A checkpoint is written after every generation.
    """
    settings = settings.checked(space)
    seeds = list(seeds)
    if len(seeds) > settings.population:
        raise ConfigError(f"{len(seeds)} seed metrics do not fit into a population of {settings.population}.")
    assert settings.max_height is not None
    recipes = [parse_tag(t) for t in settings.recipe_space or ()]
    toolbox = build_toolbox(space, settings.tournament, settings.max_height, space.max_size,
                            recipes)
    pset = space.pset()
    session_start = time.perf_counter()
    session_times: list[float] = []

    def finish_generation(g: int, pop: list[Any], hof: tools.HallOfFame, history: list[dict[str, Any]],
                          counts: tuple[int, int, int], started: float, tried: set[str],
                          polished: list[Any] | None = None) -> None:
        """Checkpoint generation ``g``; with ``polished`` (the polish candidates), the polish step
        after the last generation instead."""
        measured = pop if polished is None else polished
        hof.update(eligible(measured))
        seconds = time.perf_counter() - started
        session_times.append(seconds)
        stats = _stats(g if polished is None else g + 1, measured, counts, seconds)
        history.append({**stats.as_dict(), **({} if polished is None else {"polish": True})})
        if polished is None:
            left = statistics.fmean(session_times) * (settings.generations - g)
            log(_progress_line(f"gen {g}/{settings.generations}", stats,
                               time.perf_counter() - session_start, left))
        else:
            log(_progress_line("polish", stats))
        run.save_checkpoint(generation_record(
            g, pop, hof, evaluator=evaluator.state_dict(), evaluations_lines=run.evaluation_lines,
            history=history, tried=tried, polished=polished is not None))
        run.write_history(history)

    with random_state_kept():  # the search owns the global stream only while it runs
        try:
            return _loop(settings, toolbox, evaluator, run, pset=pset, seeds=seeds, progress=progress,
                         finish_generation=finish_generation, log=log)
        finally:
            run.close()


def _loop(settings: GPSettings, toolbox: Any, evaluator: Evaluator, run: RunDir, *,
          pset: gp.PrimitiveSet, seeds: list[gp.PrimitiveTree], progress: bool, finish_generation: Callable[..., None],
          log: Callable[[str], None]) -> GPResult:
    """Generation 0 (or the checkpoint), then the remaining generations, then the polish."""
    state = run.load_checkpoint()
    if state is None:
        pop, hof, history, tried = _first_generation(settings, toolbox, evaluator, run, seeds,
                                                     progress, finish_generation)
        done = 0
    else:
        done = state.generation
        pop, hof = restore_generation(state, pset, settings.hof_size,
                                      evaluator.load_state_dict, run.path)
        run.truncate_evaluations(state.evaluations_lines)
        tried = set(state.tried) if state.tried is not None else \
            set().union(*(_identity(toolbox, i, evaluator) for i in pop))
        history = list(state.history)
        if done < settings.generations:
            log(f"resuming {run.path} after generation {done}/{settings.generations}")
    for g in range(done + 1, settings.generations + 1):
        started = time.perf_counter()
        elites = [toolbox.clone(h) for h in hof[:settings.elite]]
        parents = toolbox.select(pop, settings.population - len(elites))
        bound = _race_bound(evaluator, hof, settings.hof_size)  # the generation's, fixed now
        offspring = _vary(toolbox, parents, settings.cx_prob, settings.mut_prob, tried, evaluator,
                          _prefetch(evaluator, bound))
        counts = _evaluate(g, offspring, toolbox, evaluator, run, bound, progress)
        pop = elites + offspring
        finish_generation(g, pop, hof, history, counts, started, tried)
    last = max(done, settings.generations)
    if settings.polish and not (state is not None and state.polished):
        # after the last generation: evaluations.jsonl lists the polish as generation last + 1
        started = time.perf_counter()
        candidates = _polish_candidates(toolbox, hof, settings.polish, tried, evaluator)
        bound = _race_bound(evaluator, hof, settings.hof_size)
        counts = _evaluate(last + 1, candidates, toolbox, evaluator, run, bound, progress, "polish")
        finish_generation(last, pop, hof, history, counts, started, tried, polished=candidates)
    return GPResult(list(hof), last, history)


def _first_generation(settings: GPSettings, toolbox: Any, evaluator: Evaluator, run: RunDir,
                      seeds: list[gp.PrimitiveTree], progress: bool,
                      finish_generation: Callable[..., None]) -> tuple:
    """Generation 0: the seeds, then ramped half-and-half trees, evaluated and checkpointed."""
    started = time.perf_counter()
    run.truncate_evaluations(0)
    random.seed(settings.seed)
    pop = [make_individual(t) for t in seeds] + toolbox.population(n=settings.population - len(seeds))
    for ind in pop if settings.recipe_space else ():  # each candidate's recipe gene, at random
        ind.recipe = parse_tag(random.choice(settings.recipe_space))
    tried = set().union(*(_identity(toolbox, i, evaluator) for i in pop))
    hof = new_hof(settings.hof_size)
    history: list[dict[str, Any]] = []
    counts = _evaluate(0, pop, toolbox, evaluator, run, None, progress)
    finish_generation(0, pop, hof, history, counts, started, tried)
    return pop, hof, history, tried
