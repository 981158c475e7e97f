"""search/fitness.py: the fitness evaluators on a tiny random LLaMA: canonical and fingerprint
caches, racing, and several tasks racing each against its own reference."""
import math

import pytest

from pruner_zero.masks import Structure
from pruner_zero.metric.io import parse_formula


def test_fitness_evaluator_caches_and_races(tiny_dir):
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)
    ev = FitnessEvaluator(bench, Structure(0.5), fitness_windows=8, race_chunk=2)
    first = ev.evaluate(parse_formula("mul(W, G)"))
    again = ev.evaluate(parse_formula("mul(G, W)"))  # same canonical key
    ranked = ev.evaluate(parse_formula("mul(log(W), 1)"))  # different key, maybe same masks as W
    plain = ev.evaluate(parse_formula("W"))
    assert first.status == "ok" and first.cached is None and first.windows == 8
    assert again.cached == "canonical" and again.fitness == first.fitness
    assert plain.cached == "fingerprint" and plain.fitness == ranked.fitness
    bad = ev.evaluate(parse_formula("sub(G, G)"))
    assert bad.status == "invalid" and math.isinf(bad.fitness) and "constant" in bad.reason

    # the cached results equal a fresh, uncached measurement
    fresh = FitnessEvaluator(bench, Structure(0.5), fitness_windows=8,
                             canonical_cache=False, fingerprint_cache=False)
    assert fresh.evaluate(parse_formula("W")).fitness == plain.fitness

    # racing: a bound far below any real perplexity stops after the first chunk, above the bound
    racer = FitnessEvaluator(bench, Structure(0.5), fitness_windows=8, race_factor=1.0, race_chunk=2)
    stopped = racer.evaluate(parse_formula("X"), race_bound=1.0)
    assert stopped.status == "stopped_early" and stopped.windows == 2
    assert math.isinf(stopped.fitness) and stopped.partial > 1.0
    full = racer.evaluate(parse_formula("W"), race_bound=1e9)
    assert full.status == "ok" and full.windows == 8 and full.fitness == plain.fitness


def test_a_cache_hit_replays_racing_under_the_bound_of_today(tiny_dir):
    """Issue #4, found on the shared model: a result measured under a loose bound (or none) and
    reused later, when the hall of fame is better, must be stopped exactly where measuring it
    again would stop; otherwise caches change fitness values and so the course of the search."""
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)

    def evaluator(**kw):
        return FitnessEvaluator(bench, Structure(0.5), fitness_windows=8, race_factor=1.0,
                                race_chunk=2, **kw)

    cached = evaluator()
    first = cached.evaluate(parse_formula("W"), race_bound=None)
    assert first.status == "ok" and [d for d, _ in first.trace] == [2, 4, 6]
    # a bound that the running perplexity crosses at some chunk, not necessarily the first
    bound = max(r for _, r in first.trace) * (1 - 1e-9)
    uncached = evaluator(canonical_cache=False, fingerprint_cache=False)
    measured = uncached.evaluate(parse_formula("W"), race_bound=bound)
    assert measured.status == "stopped_early" and measured.cached is None
    for formula, how in (("W", "canonical"), ("sqrt(W)", "fingerprint")):
        reused = cached.evaluate(parse_formula(formula), race_bound=bound)
        assert reused.cached == how
        assert (reused.status, reused.fitness, reused.windows, reused.partial, reused.reason) == \
            (measured.status, measured.fitness, measured.windows, measured.partial, measured.reason)
    # a looser bound leaves the cached result as it was measured
    loose = cached.evaluate(parse_formula("W"), race_bound=bound * 2)
    assert loose.status == "ok" and loose.fitness == first.fitness


def test_fingerprint_before_evaluate_resolves_rank_equivalents_without_scoring(tiny_dir):
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)
    ev = FitnessEvaluator(bench, Structure(0.5), fitness_windows=4)
    assert ev.fingerprint(parse_formula("W")) == ev.fingerprint(parse_formula("sqrt(W)"))
    assert ev.fingerprint(parse_formula("sub(W, W)")) is None  # constant: no valid masks
    first = ev.evaluate(parse_formula("W"))
    assert list(ev.memo.held) == ["sqrt(W)"]  # kept for its evaluation
    second = ev.evaluate(parse_formula("sqrt(W)"))
    assert first.cached is None and second.cached == "fingerprint"
    assert second.fitness == first.fitness
    assert not ev.memo.held and ev.memo.mask_bytes == 0  # served by the cache: its masks let go


def test_a_fingerprinted_candidate_is_evaluated_without_scoring_again(tiny_dir, monkeypatch):
    """A search fingerprints each offspring before it evaluates it: the evaluation prunes with
    the masks kept from the fingerprint (the metric is scored once), gives what a fresh
    evaluator gives, and with no room to keep them scores again, with the same result."""
    from pruner_zero import engine as engine_mod
    from pruner_zero.search import memo
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)
    scored = []
    original = engine_mod.metric_scores
    monkeypatch.setattr(engine_mod, "metric_scores",
                        lambda *a, **k: scored.append(1) or original(*a, **k))
    layers = len(bench.linears)
    tree = parse_formula("mul(W, sqrt(X))")
    fresh = FitnessEvaluator(bench, Structure(0.5), fitness_windows=4).evaluate(tree)
    assert len(scored) == layers
    scored.clear()
    ev = FitnessEvaluator(bench, Structure(0.5), fitness_windows=4)
    ev.fingerprint(tree)
    result = ev.evaluate(tree)
    assert len(scored) == layers and result.fitness == fresh.fitness and not ev.memo.held
    monkeypatch.setattr(memo, "MASK_MEMO_BYTES", 1)  # no room: scored again
    scored.clear()
    tight = FitnessEvaluator(bench, Structure(0.5), fitness_windows=4)
    tight.fingerprint(tree)
    assert not tight.memo.held
    assert tight.evaluate(tree).fitness == fresh.fitness and len(scored) == 2 * layers


def test_several_tasks_race_each_against_the_bound_in_its_own_perplexity(tiny_dir):
    """The loop's bound is a fitness (a ratio to the reference); task t stops once its running
    ppl exceeds race_factor x bound x reference_t. A cache hit replays that decision exactly."""
    import math

    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.search.multitask import MultiTaskEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)

    def evaluator(**kw):
        tasks = [FitnessEvaluator(bench, Structure(s), fitness_windows=8, race_factor=1.0,
                                  race_chunk=2, **kw) for s in (0.5, 0.7)]
        refs = [t.measure_ppl(parse_formula("mul(W, sqrt(X))")) for t in tasks]
        return MultiTaskEvaluator(["a", "b"], tasks, refs, [1.0, 1.0]), refs

    tree = parse_formula("W")
    fresh, refs = evaluator()
    free = fresh.evaluate(tree, race_bound=None)
    assert free.status == "ok" and set(free.tasks) == {"a", "b"}
    assert free.fitness == pytest.approx(math.sqrt(free.tasks["a"]["ratio"] * free.tasks["b"]["ratio"]))
    # a bound far below: task a stops at its first chunk, task b is never measured
    tight = evaluator()[0].evaluate(tree, race_bound=0.5)
    assert tight.status == "stopped_early" and math.isinf(tight.fitness)
    assert tight.tasks["a"]["status"] == "stopped_early" and "b" not in tight.tasks
    assert tight.tasks["a"]["partial"] > 0.5 * refs[0] and "task a" in tight.reason
    # the same decisions from a cache filled without a bound (generation 0), then tightened
    cached, _ = evaluator()
    cached.evaluate(tree, race_bound=None)
    again = cached.evaluate(tree, race_bound=0.5)
    assert again.tasks["a"]["cached"] == "canonical"
    assert (again.status, again.fitness, again.tasks["a"]["partial"]) == \
        (tight.status, tight.fitness, tight.tasks["a"]["partial"])


class InProcessPool:
    """The pool's submit/gather, measuring here at once: which jobs were handed over, and when."""

    def __init__(self, evaluator):
        self.evaluator, self.jobs, self.results = evaluator, [], {}

    def submit(self, job):
        task, formula, bound = job
        self.jobs.append(job)
        self.results[len(self.jobs)] = self.evaluator.evaluators[task].measure_formula(formula, bound)
        return len(self.jobs)

    def gather(self, tickets):
        return [self.results.pop(t) for t in tickets]

    def discard(self, tickets):
        self.discarded = list(tickets)
        for t in tickets:
            self.results.pop(t)


def test_prefetched_measurements_are_those_evaluate_many_uses(tiny_dir):
    """Candidates handed to the pool while the generation is still varied (MultiTaskEvaluator
    .prefetch) are the measurements evaluate_many uses, and its records are one-by-one's."""
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.search.multitask import MultiTaskEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)

    def evaluator():
        task = FitnessEvaluator(bench, Structure(0.5), fitness_windows=8, race_factor=1.0,
                                race_chunk=2)
        return MultiTaskEvaluator(["a"], [task], [100.0], [1.0])

    seen = "mul(W, X)"  # measured before the generation: a cache hit, never handed over
    trees = ["mul(W, G)", "mul(G, W)", "W", "mul(log(W), 1)", seen, "sub(G, G)", "mul(W, sqrt(X))"]
    here = evaluator()
    here.evaluate(parse_formula(seen))
    expected = [here.evaluate(parse_formula(f), race_bound=1.2) for f in trees]

    pooled = evaluator()
    pooled.evaluate(parse_formula(seen))
    pooled.pool = pool = InProcessPool(pooled)
    for f in trees:
        pooled.prefetch(parse_formula(f), 1.2)
    handed_over = list(pool.jobs)
    got = pooled.evaluate_many([parse_formula(f) for f in trees], race_bound=1.2)
    strip = lambda e: {k: v for k, v in e.as_dict().items() if k != "seconds"}
    assert [strip(e) for e in got] == [strip(e) for e in expected]
    # one job per new set of masks, all of them before evaluate_many, none again in it
    assert pool.jobs == handed_over
    assert [f for _, f, _ in handed_over] == ["mul(W, G)", "W", "mul(W, sqrt(X))"]
    assert {b for _, _, b in handed_over} == {1.2 * 100.0} and not pool.results


def test_with_workers_no_masks_are_kept_for_an_evaluation_here(tiny_dir):
    """The workers prune for themselves: a fingerprint keeps no masks (nor the weights an update
    kept) in the driver; without a pool it keeps them for the evaluation to come."""
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.search.multitask import MultiTaskEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)
    multi = MultiTaskEvaluator(["a"], [FitnessEvaluator(bench, Structure(0.5), fitness_windows=8)],
                               [100.0], [1.0])
    task = multi.evaluators[0]
    task.fingerprint(parse_formula("mul(W, X)"))
    assert len(task.memo.held) == 1
    multi.pool = InProcessPool(multi)  # those kept before are let go too
    task.fingerprint(parse_formula("mul(W, G)"))
    assert not task.memo.held and task.memo.mask_bytes == 0
    multi.pool = None
    task.fingerprint(parse_formula("mul(W, sqrt(X))"))
    assert list(task.memo.held) == ["mul(W, sqrt(X))"]


def test_walked_weights_are_given_up_oldest_first_and_the_byte_counts_stay_exact(monkeypatch):
    """Within WALKED_MEMO_BYTES the oldest candidates give up their walked weights first (their
    masks stay); a candidate popped for its masks' budget, pruned, or served by a cache leaves
    both byte counts exact."""
    import torch

    from pruner_zero.masks import PackedMasks
    from pruner_zero.search import memo
    from pruner_zero.search.memo import MaskMemo

    held = MaskMemo()

    def masks(i):  # 10 bytes of masks, 40 bytes of walked weights
        return PackedMasks(f"fp{i}", {"l": (torch.zeros(10, dtype=torch.uint8), torch.Size([80]))},
                           {"l": torch.zeros(10)})

    def check():
        assert held.mask_bytes == sum(m.mask_nbytes for m in held.held.values())
        assert held.walked_bytes == sum(m.walked_nbytes for m in held.held.values())

    monkeypatch.setattr(memo, "WALKED_MEMO_BYTES", 100)
    monkeypatch.setattr(memo, "MASK_MEMO_BYTES", 40)
    for i in range(4):
        held.remember(f"f{i}", masks(i))
        check()
    # 4 x 10 mask bytes fit; 4 x 40 walked bytes do not: the two oldest gave theirs up
    assert [m.walked is not None for m in held.held.values()] == [False, False, True, True]
    held.remember("f4", masks(4))  # over the masks' budget: the oldest goes
    check()
    assert list(held.held) == ["f1", "f2", "f3", "f4"]
    assert [m.walked is not None for m in held.held.values()] == [False, False, True, True]
    assert held.pop("f3").walked is not None and held.pop("f3") is None
    check()
    held.clear()
    assert not held.held and held.mask_bytes == held.walked_bytes == 0
    held.on = False
    held.remember("f5", masks(5))
    assert not held.held


def test_a_wrong_prefetch_is_dropped_and_changes_nothing(tiny_dir):
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.search.multitask import MultiTaskEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)

    def evaluator():
        return MultiTaskEvaluator(["a"], [FitnessEvaluator(bench, Structure(0.5), fitness_windows=8)],
                                  [100.0], [1.0])

    expected = evaluator().evaluate(parse_formula("mul(W, G)"))
    pooled = evaluator()
    pooled.pool = pool = InProcessPool(pooled)
    pooled.prefetch(parse_formula("X"), None)  # not among the candidates below
    pooled.prefetch(parse_formula("mul(W, G)"), None)
    got = pooled.evaluate_many([parse_formula("mul(W, G)")])
    strip = lambda e: {k: v for k, v in e.as_dict().items() if k != "seconds"}
    assert [strip(e) for e in got] == [strip(expected)]
    assert pool.discarded == [1] and pool.jobs[0][1] == "X" and not pool.results
    # and the next generation starts with nothing pending: X is prefetched again
    pooled.prefetch(parse_formula("X"), None)
    assert pool.jobs[-1][1] == "X" and len(pool.jobs) == 3
