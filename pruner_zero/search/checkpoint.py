"""checkpoint.json, written and read here alone (``Checkpoint``): each generation's record
(population, hall of fame, evaluator caches, history, both random streams, the evaluation log's
length), its structure checked on load, its infinities revived, and its restoration, so a
resumed run continues exactly where it left off; a finished run adds its ``FinalResults``."""
from __future__ import annotations

import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch
from deap import gp, tools

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.search.layout import CHECKPOINT, CHECKPOINT_VERSION, STOPPED
from pruner_zero.search.candidate import candidate_text, parse_candidate
from pruner_zero.search.results import FinalResults


@dataclass(frozen=True)
class Checkpoint:
    """checkpoint.json after a generation (or the polish step; ``finished`` with ``final`` once
    the tail is measured). Individuals are records (formula, fitness, status, key, fingerprint);
    ``evaluator`` is the evaluator's own state."""

    generation: int
    evaluations_lines: int  # evaluations.jsonl's lines when it was written
    population: list[dict[str, Any]]
    hall_of_fame: list[dict[str, Any]]
    random_state: list[Any]
    evaluator: dict[str, Any]
    history: list[dict[str, Any]]
    polished: bool = False
    torch_rng_state: list[int] | None = None
    tried: list[str] | None = None  # None: a checkpoint older than the record of them
    finished: bool = False
    final: FinalResults | None = None

    def finished_with(self, final: FinalResults) -> "Checkpoint":
        return replace(self, finished=True, final=final)

    def as_dict(self) -> dict[str, Any]:
        d = {"version": CHECKPOINT_VERSION, "generation": self.generation,
             "polished": self.polished, "population": self.population,
             "hall_of_fame": self.hall_of_fame, "random_state": self.random_state,
             "torch_rng_state": self.torch_rng_state, "evaluator": self.evaluator,
             "evaluations_lines": self.evaluations_lines, "history": self.history,
             "finished": self.finished}
        if self.tried is not None:
            d["tried"] = self.tried
        if self.final is not None:
            d["final"] = self.final.as_dict()
        return d

    @classmethod
    def from_dict(cls, state: Any, path: Path) -> "Checkpoint":
        """A checkpoint read back; a file of another version, or hand-edited or damaged, is
        refused by name before anything of the run is touched."""
        if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(f"{path} is not a checkpoint this version can resume "
                              f"(expected version {CHECKPOINT_VERSION}).")
        problem = checkpoint_problem(state)
        if problem:
            raise ConfigError(f"{path} is damaged ({problem}); nothing was changed in "
                              f"{path.parent}: restore the file, or start a new run with --out")
        state = revive_infinities(state)
        try:
            final = FinalResults.from_dict(state["final"]) if state.get("finished") else None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {exc}); restore the "
                              "file, or start a new run with --out") from None
        return cls(generation=state["generation"], evaluations_lines=state["evaluations_lines"],
                   population=state["population"], hall_of_fame=state["hall_of_fame"],
                   random_state=state["random_state"], evaluator=state["evaluator"],
                   history=state["history"], polished=bool(state.get("polished")),
                   torch_rng_state=state.get("torch_rng_state"), tried=state.get("tried"),
                   finished=bool(state.get("finished")), final=final)


def same_metric(a: Any, b: Any) -> bool:
    """Hall-of-fame duplicates: equal canonical keys, or equal masks (same pruned model)."""
    if a.key is not None and a.key == b.key:
        return True
    return a.fingerprint is not None and a.fingerprint == b.fingerprint


def _ind_state(ind: Any) -> dict[str, Any]:
    return {"formula": candidate_text(ind), "fitness": ind.fitness.values[0] if ind.fitness.valid else None,
            "status": ind.status, "key": ind.key, "fingerprint": ind.fingerprint}


def _ind_from_state(d: dict[str, Any], pset: gp.PrimitiveSet) -> Any:
    ind = parse_candidate(d["formula"], pset)
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
                      polished: bool) -> Checkpoint:
    """What checkpoint.json holds after a generation (or the polish step)."""
    return Checkpoint(generation=generation, polished=polished,
                      population=[_ind_state(i) for i in population],
                      hall_of_fame=[_ind_state(i) for i in hof], random_state=_random_state(),
                      torch_rng_state=_torch_state(), evaluator=evaluator,
                      evaluations_lines=evaluations_lines, history=history, tried=sorted(tried))


def restore_generation(state: Checkpoint, pset: gp.PrimitiveSet, hof_size: int,
                       load_evaluator: Any, path: Any) -> tuple[list[Any], tools.HallOfFame]:
    """The random streams, the evaluator's caches, the population and the hall of fame of a
    checkpoint (its structure was checked on load: what is left is the values inside it)."""
    try:
        _set_random_state(state.random_state)
        _set_torch_state(state.torch_rng_state)
        load_evaluator(state.evaluator)
        population = [_ind_from_state(d, pset) for d in state.population]
        hof = _restore_hof(hof_size, [_ind_from_state(d, pset) for d in state.hall_of_fame])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError,
            MetricError, ConfigError) as exc:
        raise ConfigError(f"{path / CHECKPOINT} is damaged ({type(exc).__name__}: {exc}); "
                          "nothing was changed: restore the file, or start a new run with --out"
                          ) from exc
    return population, hof


def checked_formulas(state: Checkpoint, pset: gp.PrimitiveSet, path: Any) -> None:
    """Every formula a checkpoint holds parses over the run's space, before any work is redone."""
    for d in state.population + state.hall_of_fame:
        try:
            parse_candidate(d["formula"], pset)
        except (MetricError, ConfigError) as exc:
            raise ConfigError(f"{path / CHECKPOINT} is damaged ({exc}); restore the file, or "
                              "start a new run with --out") from exc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _individuals_problem(items: Any, key: str) -> str | None:
    if not isinstance(items, list):
        return f"'{key}' must be a list"
    for i, d in enumerate(items):
        if not isinstance(d, dict) or not isinstance(d.get("formula"), str):
            return f"'{key}'[{i}] has no formula"
        if d.get("fitness") is not None and not _is_num(d["fitness"]):
            return f"'{key}'[{i}] has a fitness that is not a number"
    return None


def checkpoint_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's structure, or None: a hand-edited or damaged file is
    refused by name before anything of the run is touched."""
    need = {"generation": _is_int, "evaluations_lines": _is_int,
            "population": lambda v: isinstance(v, list), "hall_of_fame": lambda v: isinstance(v, list),
            "evaluator": lambda v: isinstance(v, dict), "history": lambda v: isinstance(v, list),
            "random_state": lambda v: isinstance(v, list) and len(v) == 3 and _is_int(v[0])
            and isinstance(v[1], list) and all(_is_int(x) for x in v[1])
            and (v[2] is None or _is_num(v[2]))}
    for key, ok in need.items():
        if key not in state:
            return f"missing '{key}'"
        if not ok(state[key]):
            return f"'{key}' has the wrong type or value"
    for key in ("population", "hall_of_fame"):
        problem = _individuals_problem(state[key], key)
        if problem:
            return problem
    torch_state = state.get("torch_rng_state")
    if torch_state is not None and not (isinstance(torch_state, list)
                                        and all(_is_int(x) and x < 256 for x in torch_state)):
        return "'torch_rng_state' has the wrong type or value"
    if "tried" in state and not (isinstance(state["tried"], list)
                                 and all(isinstance(t, str) for t in state["tried"])):
        return "'tried' has the wrong type"
    if state.get("finished"):
        return FinalResults.problem(state.get("final"))
    return None


def _inf(value: Any) -> Any:
    return math.inf if value is None else value


def _revive_rows(rows: Any) -> None:
    for r in rows if isinstance(rows, list) else ():
        if isinstance(r, dict) and "ppl" in r:
            r["ppl"] = _inf(r["ppl"])


def _revive_stored(stored: Any) -> None:
    """An evaluator's cached result: every one was measured, so a null fitness was inf; a
    null running perplexity in its racing trace too (the trace is replayed on a resume)."""
    if not isinstance(stored, dict):
        return
    stored["fitness"] = _inf(stored.get("fitness"))
    if stored.get("status") == STOPPED:
        stored["partial"] = _inf(stored.get("partial"))
    if isinstance(stored.get("trace"), list):
        stored["trace"] = [[t[0], _inf(t[1])] if isinstance(t, list) and len(t) == 2 else t
                           for t in stored["trace"]]


def revive_infinities(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint as it was before strict JSON wrote its infinities as null: a resumed run
    must go on exactly as the uninterrupted one. Only numbers that are never legitimately
    absent are revived (an individual's fitness is absent until it is evaluated: its status
    says whether it was)."""
    for key in ("population", "hall_of_fame"):
        for d in state.get(key, []):
            if isinstance(d, dict) and d.get("fitness") is None and d.get("status") is not None:
                d["fitness"] = math.inf
    evaluator = state.get("evaluator", {})
    per_task = evaluator.get("tasks") if isinstance(evaluator.get("tasks"), dict) else {"": evaluator}
    for ev in per_task.values():
        for table in ("by_key", "by_fingerprint"):
            cached = ev.get(table) if isinstance(ev, dict) else None
            for stored in cached.values() if isinstance(cached, dict) else ():
                _revive_stored(stored)
    _revive_rows(evaluator.get("start_rows"))
    for h in state.get("history", []):
        if isinstance(h, dict):
            for k in ("best", "median"):
                if k in h:
                    h[k] = _inf(h[k])
    FinalResults.revive(state.get("final"))
    return state
