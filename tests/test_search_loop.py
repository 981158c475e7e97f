"""The GP loop with a fake, deterministic evaluator: resume equals an uninterrupted run,
elitism, OOS before evaluation, invalid and racing-stopped candidates."""
from __future__ import annotations

import hashlib
import json
import math

import pytest

from pruner_zero.errors import ConfigError
from pruner_zero.metric import load_space, parse_formula, simplify
from pruner_zero.search.loop import GPSettings, run_gp
from pruner_zero.search.fitness import Evaluation
from pruner_zero.search.rundir import CHECKPOINT, EVALUATIONS, RunDir


class Crash(Exception):
    """Stands for SIGKILL: not a candidate error, so it escapes the loop."""


def fake_fitness(formula: str) -> float:
    """A deterministic 'perplexity' in [10, 110) from the formula text."""
    return 10 + int(hashlib.sha256(formula.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF * 100


class FakeEvaluator:
    """fitness = f(formula); formulas containing any of `invalid` are invalid (inf)."""

    def __init__(self, invalid: tuple[str, ...] = (), crash_at: int | None = None,
                 raise_on: str | None = None, stop: tuple[str, ...] = (), race_factor=None):
        self.invalid, self.crash_at, self.raise_on, self.stop = invalid, crash_at, raise_on, stop
        self.race_factor = race_factor
        self.calls = 0
        self.seen: dict[str, float] = {}
        self.trees: list = []
        self.bounds: list = []

    def evaluate(self, tree, race_bound=None):
        self.calls += 1
        if self.crash_at is not None and self.calls == self.crash_at:
            raise Crash()
        self.trees.append(tree)
        self.bounds.append(race_bound)
        formula = str(tree)
        if self.raise_on and self.raise_on in formula:
            raise RuntimeError("boom")
        cached = "canonical" if formula in self.seen else None
        if any(s in formula for s in self.invalid):
            fit, status, reason = math.inf, "invalid", "fake: invalid"
        elif any(s in formula for s in self.stop):
            fit, status, reason = 1.0, "stopped_early", "fake: stopped"  # partial, looks best
        else:
            fit, status, reason = fake_fitness(formula), "ok", None
        self.seen[formula] = fit
        return Evaluation(formula, formula, fit, status, reason, 0.0, cached, None, 4)

    def state_dict(self) -> dict:
        return {"seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.seen = dict(state["seen"])


SETTINGS = GPSettings(population=8, generations=5, seed=3, elite=2, hof_size=5)


def run(path, evaluator, settings=SETTINGS, space="paper", seeds=()):
    return run_gp(load_space(space), evaluator, settings, RunDir(path), seeds=seeds, progress=False,
                  log=lambda m: None)


def hof_of(result):
    return [(str(i), i.fitness.values[0]) for i in result.hall_of_fame]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref")
    ev = FakeEvaluator(invalid=("zsn",))
    result = run(path, ev)
    return path, result, ev.calls


def test_a_run_evaluates_every_generation_and_checkpoints_it(reference):
    path, result, calls = reference
    state = json.loads((path / CHECKPOINT).read_text())
    assert state["generation"] == SETTINGS.generations
    assert len(state["population"]) == SETTINGS.population
    lines = (path / EVALUATIONS).read_text().splitlines()
    assert len(lines) == calls == state["evaluations_lines"]
    # generations 0..N, then the polish (N + 1) when it found untried neighbours
    assert set(range(SETTINGS.generations + 1)) <= {json.loads(l)["generation"] for l in lines} \
        <= set(range(SETTINGS.generations + 2))
    assert state["polished"] is True
    assert [h["formula"] for h in state["hall_of_fame"]] == [f for f, _ in hof_of(result)]
    fits = [f for _, f in hof_of(result)]
    assert fits == sorted(fits) and len(fits) == SETTINGS.hof_size


def test_crash_then_resume_equals_the_uninterrupted_run(reference, tmp_path):
    ref_path, ref_result, calls = reference
    ref_log = (ref_path / EVALUATIONS).read_text()
    # kill points: inside generation 0, right after the first evaluation of a later generation,
    # and near the end
    for crash_at in (3, SETTINGS.population + 1, calls // 2, calls):
        path = tmp_path / f"crash{crash_at}"
        with pytest.raises(Crash):
            run(path, FakeEvaluator(invalid=("zsn",), crash_at=crash_at))
        assert (path / EVALUATIONS).read_text().count("\n") == crash_at - 1
        resumed = run(path, FakeEvaluator(invalid=("zsn",)))  # a fresh process: fresh evaluator
        assert hof_of(resumed) == hof_of(ref_result), crash_at
        assert (path / EVALUATIONS).read_text() == ref_log, crash_at  # interrupted lines were dropped
        a = json.loads((path / CHECKPOINT).read_text())
        b = json.loads((ref_path / CHECKPOINT).read_text())
        for k in ("population", "hall_of_fame", "random_state", "evaluator", "evaluations_lines"):
            assert a[k] == b[k], (crash_at, k)


def test_resume_after_a_finished_generation_count_changes_nothing(reference, tmp_path):
    ref_path, ref_result, _ = reference
    path = tmp_path / "again"
    run(path, FakeEvaluator(invalid=("zsn",)))
    ev = FakeEvaluator(invalid=("zsn",))
    again = run(path, ev)
    assert ev.calls == 0 and hof_of(again) == hof_of(ref_result)


def test_the_search_leaves_the_callers_random_stream_alone(tmp_path):
    import random

    random.seed(123)
    expected = random.Random(123).random()
    run(tmp_path / "r", FakeEvaluator(), GPSettings(population=4, generations=1))
    assert random.random() == expected


def test_elitism_keeps_the_best(tmp_path):
    result = run(tmp_path / "e", FakeEvaluator(), GPSettings(population=6, generations=8, seed=1,
                                                             elite=1, mut_prob=1.0, cx_prob=1.0))
    bests = [h["best"] for h in result.history if not h.get("polish")]
    assert all(b2 <= b1 for b1, b2 in zip(bests, bests[1:])), bests
    state = json.loads((tmp_path / "e" / CHECKPOINT).read_text())
    best = state["hall_of_fame"][0]
    assert best["formula"] in [p["formula"] for p in state["population"]]
    assert best["fitness"] == min(p["fitness"] for p in state["population"]) == bests[-1]


def test_every_candidate_is_simplified_before_evaluation(tmp_path):
    space = load_space("paper")
    ev = FakeEvaluator()
    seeds = [parse_formula("neg(neg(W))"), parse_formula("mul(abs(mul(W, W)), mms(G))")]
    run(tmp_path / "s", ev, GPSettings(population=10, generations=4, seed=2), seeds=seeds)
    formulas = [str(t) for t in ev.trees]
    assert formulas[0] == "W"  # the seed neg(neg(W)) was rewritten first
    assert not any("neg(neg(" in f or "abs(abs(" in f for f in formulas)
    for t in ev.trees:  # already at the fixpoint: OOS changes nothing any more
        assert str(simplify(t, pset=space.pset())) == str(t)


def test_invalid_and_failing_candidates_do_not_stop_the_search(tmp_path):
    ev = FakeEvaluator(invalid=("G",), raise_on="X")
    result = run(tmp_path / "i", ev, GPSettings(population=10, generations=3, seed=0, polish=0),
                 space="small")
    records = [json.loads(l) for l in (tmp_path / "i" / EVALUATIONS).read_text().splitlines()]
    assert {r["generation"] for r in records} == {0, 1, 2, 3}
    bad = [r for r in records if r["status"] == "invalid"]
    assert any("RuntimeError: boom" in r["reason"] for r in bad)
    assert any(r["reason"] == "fake: invalid" for r in bad)
    assert all(r["fitness"] is None for r in bad)  # strict JSON: inf is null, the status says why
    assert result.hall_of_fame and all("G" not in str(i) and "X" not in str(i)
                                       for i in result.hall_of_fame)


def test_racing_stopped_candidates_never_enter_the_hall_of_fame(tmp_path):
    ev = FakeEvaluator(stop=("mms",), race_factor=1.5)
    settings = GPSettings(population=10, generations=4, seed=5, hof_size=3)
    result = run(tmp_path / "r", ev, settings, space="small")
    assert any("mms" in str(t) for t in ev.trees)  # some were stopped ...
    assert all("mms" not in str(i) for i in result.hall_of_fame)  # ... and none is in the HoF
    assert ev.bounds[0] is None  # no bound before the hall of fame is full
    full = [b for b in ev.bounds if b is not None]
    assert full and all(math.isfinite(b) for b in full)


@pytest.mark.parametrize("kwargs,message", [
    ({"population": 1}, "--population"),
    ({"elite": 8}, "--elite"),
    ({"elite": 6, "hof_size": 5}, "--hof-size"),
    ({"cx_prob": 1.5}, "--cx-prob"),
    ({"tournament": 0}, "--tournament"),
    ({"max_height": 2}, "--max-height"),
])
def test_bad_settings_are_one_clear_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        GPSettings(**{"population": 8, **kwargs}).checked(load_space("paper"))


def test_shrink_neighbours_replace_one_operator_by_one_of_its_arguments():
    from pruner_zero.search.operators import shrink_neighbours

    tree = parse_formula("mul(sqrt(mul(mul(X, G), W)), W)")
    got = [str(t) for t in shrink_neighbours(tree)]
    assert got == ["sqrt(mul(mul(X, G), W))", "W",          # the root mul
                   "mul(mul(mul(X, G), W), W)",             # sqrt
                   "mul(sqrt(mul(X, G)), W)", "mul(sqrt(W), W)",  # inner mul
                   "mul(sqrt(mul(X, W)), W)", "mul(sqrt(mul(G, W)), W)"]  # innermost mul
    assert all(len(t) < len(tree) for t in shrink_neighbours(tree))
    assert shrink_neighbours(parse_formula("W")) == []


def test_polish_tries_the_untried_simpler_neighbours_of_the_best(tmp_path):
    """A fake landscape where the best metric is one step simpler than anything the GP is likely
    to build: the polish finds it and it enters the hall of fame."""
    target = "mul(sqrt(mul(X, G)), W)"

    class Landscape(FakeEvaluator):
        def evaluate(self, tree, race_bound=None):
            r = super().evaluate(tree, race_bound)
            if str(tree) == target:
                r.fitness = 1.0
            return r

    space, settings = "small", GPSettings(population=6, generations=1, seed=0, hof_size=3, polish=1)
    seeds = [parse_formula("mul(sqrt(mul(mul(X, G), W)), W)", load_space(space).pset())]

    class Best(Landscape):  # the seed is the best of the GP part
        def evaluate(self, tree, race_bound=None):
            r = super().evaluate(tree, race_bound)
            if str(tree) == str(seeds[0]):
                r.fitness = 2.0
            return r

    ev = Best()
    result = run(tmp_path / "p", ev, settings, space, seeds)
    assert hof_of(result)[0] == (target, 1.0)
    lines = [json.loads(l) for l in (tmp_path / "p" / EVALUATIONS).read_text().splitlines()]
    polish = [l["formula"] for l in lines if l["generation"] == 2]
    assert target in polish and all(l["formula"] != target for l in lines if l["generation"] < 2)
    # a run without the polish never measures it
    plain = run(tmp_path / "q", Best(), GPSettings(population=6, generations=1, seed=0, hof_size=3,
                                                   polish=0), space, seeds)
    assert hof_of(plain)[0] == (str(seeds[0]), 2.0)


def test_polish_is_clamped_to_the_hall_of_fame_size():
    space = load_space("small")
    assert GPSettings(hof_size=2).checked(space).polish == 2
    with pytest.raises(ConfigError, match="--polish"):
        GPSettings(polish=-1).checked(space)
