"""The GP's part of checkpoint.json, written and read here alone: each generation's record
(population, hall of fame, evaluator caches, history, both random streams, the evaluation log's
length) and its restoration, so a resumed run continues exactly where it left off."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from deap import gp, tools

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.metric.io import format_formula, parse_formula
from pruner_zero.search.layout import CHECKPOINT
from pruner_zero.search.operators import make_individual


def same_metric(a: Any, b: Any) -> bool:
    """Hall-of-fame duplicates: equal canonical keys, or equal masks (same pruned model)."""
    if a.key is not None and a.key == b.key:
        return True
    return a.fingerprint is not None and a.fingerprint == b.fingerprint


def _ind_state(ind: Any) -> dict[str, Any]:
    return {"formula": format_formula(ind), "fitness": ind.fitness.values[0] if ind.fitness.valid else None,
            "status": ind.status, "key": ind.key, "fingerprint": ind.fingerprint}


def _ind_from_state(d: dict[str, Any], pset: gp.PrimitiveSet) -> Any:
    ind = make_individual(parse_formula(d["formula"], pset))
    if d.get("fitness") is not None:
        ind.fitness.values = (float(d["fitness"]),)
    ind.status, ind.key, ind.fingerprint = d.get("status"), d.get("key"), d.get("fingerprint")
    return ind


def new_hof(size: int) -> tools.HallOfFame:
    return tools.HallOfFame(size, similar=same_metric)


def _restore_hof(size: int, items: list[Any]) -> tools.HallOfFame:
    """A HallOfFame holding ``items`` (best first) in exactly the saved order."""
    hof = new_hof(size)
    hof.items = list(items)
    hof.keys = [i.fitness for i in reversed(hof.items)]
    return hof


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Whatever runs inside leaves Python's global random stream (the GP's) as it found it."""
    state = random.getstate()
    try:
        yield
    finally:
        random.setstate(state)


def _random_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _set_random_state(state: list[Any]) -> None:
    random.setstate((state[0], tuple(state[1]), state[2]))


def _torch_state() -> list[int]:
    return torch.get_rng_state().tolist()


def _set_torch_state(state: list[int] | None) -> None:
    if state is None:
        return
    torch.set_rng_state(torch.tensor(state, dtype=torch.uint8))


def generation_record(generation: int, population: list[Any], hof: tools.HallOfFame, *,
                      evaluator: dict[str, Any], evaluations_lines: int,
                      history: list[dict[str, Any]], tried: set[str],
                      polished: bool) -> dict[str, Any]:
    """What checkpoint.json holds after a generation (or the polish step)."""
    return {"generation": generation, "polished": polished,
            "population": [_ind_state(i) for i in population],
            "hall_of_fame": [_ind_state(i) for i in hof], "random_state": _random_state(),
            "torch_rng_state": _torch_state(), "evaluator": evaluator,
            "evaluations_lines": evaluations_lines, "history": history, "finished": False,
            "tried": sorted(tried)}


def restore_generation(state: dict[str, Any], pset: gp.PrimitiveSet, hof_size: int,
                       load_evaluator: Any, path: Any) -> tuple[list[Any], tools.HallOfFame]:
    """The random streams, the evaluator's caches, the population and the hall of fame of a
    checkpoint (its structure was checked on load: what is left is the values inside it)."""
    try:
        _set_random_state(state["random_state"])
        _set_torch_state(state.get("torch_rng_state"))
        load_evaluator(state["evaluator"])
        population = [_ind_from_state(d, pset) for d in state["population"]]
        hof = _restore_hof(hof_size, [_ind_from_state(d, pset) for d in state["hall_of_fame"]])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError,
            MetricError) as exc:
        raise ConfigError(f"{path / CHECKPOINT} is damaged ({type(exc).__name__}: {exc}); "
                          "nothing was changed: restore the file, or start a new run with --out"
                          ) from exc
    return population, hof


def checked_formulas(state: dict[str, Any], pset: gp.PrimitiveSet, path: Any) -> None:
    """Every formula a checkpoint holds parses over the run's space, before any work is redone."""
    for d in state["population"] + state["hall_of_fame"]:
        try:
            parse_formula(d["formula"], pset)
        except MetricError as exc:
            raise ConfigError(f"{path / CHECKPOINT} is damaged ({exc}); restore the file, or "
                              "start a new run with --out") from exc
