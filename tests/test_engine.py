"""Apply/restore, fingerprints and the fitness evaluator on a tiny random LLaMA."""
import math

import pytest
import torch

from pruner_zero.engine import Engine, mask_fingerprint, measure_sparsity
from pruner_zero.masks import Structure
from pruner_zero.metric.io import parse_formula, resolve_metric
from pruner_zero.model import prunable_linears
from pruner_zero.stats import compute_stats

from conftest import masks_of


@pytest.fixture
def engine(tiny_model):
    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    return Engine(tiny_model, linears, stats, Structure(0.5))


def test_prune_then_restore_gives_back_the_dense_weights_exactly(engine):
    before = {n: m.weight.detach().clone() for n, m in engine.linears.items()}
    engine.prune(resolve_metric("wanda")[1])
    assert measure_sparsity(engine.linears).overall == pytest.approx(0.5)
    engine.restore()
    assert all(torch.equal(before[n], m.weight) for n, m in engine.linears.items())
    assert measure_sparsity(engine.linears).zeros == 0
    engine.prune(resolve_metric("magnitude")[1])  # a second prune starts from the dense model
    engine.prune(resolve_metric("wanda")[1])
    assert measure_sparsity(engine.linears).overall == pytest.approx(0.5)
    engine.restore()
    assert all(torch.equal(before[n], m.weight) for n, m in engine.linears.items())


def test_prune_keeps_no_copy_of_the_model_only_what_it_zeroed(engine):
    """The restore record of a 50% prune: the zeroed values and a 1-bit mask per weight."""
    engine.prune(resolve_metric("wanda")[1])
    try:
        kept = sum(u.values.numel() * u.values.element_size() + u.packed.numel()
                   for u in engine._undo.values())
        weights = sum(m.weight.numel() * m.weight.element_size() for m in engine.linears.values())
        assert kept <= 0.5 * weights + weights / 32 + 8 * len(engine.linears)
        assert all(u.values.device.type == "cpu" for u in engine._undo.values())
    finally:
        engine.restore()


def test_a_metric_failing_on_a_later_layer_leaves_the_model_dense(engine):
    from pruner_zero.errors import MetricError
    from pruner_zero.metric.registry import MATRIX, Terminal, register_terminal, unregister

    before = {n: m.weight.detach().clone() for n, m in engine.linears.items()}
    last = list(engine.linears)[-1]
    for name, s in engine.stats.items():  # a statistic that is constant on the last layer only
        s["Z"] = torch.zeros_like(s["G"]) if name == last else torch.rand_like(s["G"])
    register_terminal(Terminal("Z", MATRIX, statistic="Z"))
    try:
        with pytest.raises(MetricError, match="constant"):
            engine.prune(parse_formula("Z"))
    finally:
        unregister("Z")
    assert all(torch.equal(before[n], m.weight) for n, m in engine.linears.items())


def test_fingerprint_is_that_of_the_applied_masks_and_leaves_the_model_dense(engine):
    before = {n: m.weight.detach().clone() for n, m in engine.linears.items()}
    tree = resolve_metric("gblm")[1]
    fp = engine.fingerprint(tree)
    assert all(torch.equal(before[n], m.weight) for n, m in engine.linears.items())
    assert fp == mask_fingerprint(masks_of(engine, tree)) == engine.prune(tree)
    engine.restore()


@pytest.mark.parametrize("equivalent", ["log(W)", "mul(W, 7)", "sqr(W)", "sqrt(W)", "add(W, 3)"])
def test_fingerprint_equal_for_rank_equivalent_metrics(engine, equivalent):
    base = engine.fingerprint(parse_formula("W"))
    assert engine.fingerprint(parse_formula(equivalent)) == base


def test_fingerprint_changes_when_any_single_mask_changes(engine):
    masks = masks_of(engine, parse_formula("W"))
    base = mask_fingerprint(masks)
    assert base == engine.fingerprint(parse_formula("W"))
    assert mask_fingerprint(dict(reversed(list(masks.items())))) == base  # any layer order
    for name in list(masks)[:: max(1, len(masks) // 4)]:
        flipped = {n: m.clone() for n, m in masks.items()}
        flipped[name].view(-1)[0] ^= True
        assert mask_fingerprint(flipped) != base
    assert engine.fingerprint(parse_formula("mul(W, G)")) != base


def test_nan_and_constant_metrics_are_metric_errors(engine):
    from pruner_zero.errors import MetricError

    with pytest.raises(MetricError, match="constant"):
        engine.prune(parse_formula("sub(W, W)"))
    with pytest.raises(MetricError, match="NaN|inf"):
        engine.fingerprint(parse_formula("div(W, sub(G, G))"))


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
    second = ev.evaluate(parse_formula("sqrt(W)"))
    assert first.cached is None and second.cached == "fingerprint"
    assert second.fitness == first.fitness


def test_several_tasks_race_each_against_the_bound_in_its_own_perplexity(tiny_dir):
    """The loop's bound is a fitness (a ratio to the reference); task t stops once its running
    ppl exceeds race_factor x bound x reference_t. A cache hit replays that decision exactly."""
    import math

    from pruner_zero.search.fitness import FitnessEvaluator, MultiTaskEvaluator
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


# ------------------------------------------------------------ layer-by-layer calibration

def _calib(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 64, (6, 16), generator=g)


def test_sequential_calibration_measures_x_on_the_pruned_blocks_before(tiny_model):
    """Block 0 sees the same inputs either way (same masks); later blocks see the outputs of
    pruned blocks (other masks); the model's weights are dense again afterwards."""
    linears = prunable_linears(tiny_model)
    calib = _calib()
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    shape = Structure(0.7)
    before = {n: m.weight.detach().clone() for n, m in linears.items()}
    dense = Engine(tiny_model, linears, stats, shape)
    seq = Engine(tiny_model, linears, stats, shape, "sequential", calib)
    tree = resolve_metric("wanda")[1]
    a, b = masks_of(dense, tree), masks_of(seq, tree)
    assert seq.fingerprint(tree) == mask_fingerprint(b) != dense.fingerprint(tree)
    assert list(a) == list(b)
    first = [n for n in a if n.startswith("model.layers.0.")]
    later = [n for n in a if not n.startswith("model.layers.0.")]
    assert all(torch.equal(a[n], b[n]) for n in first)
    assert any(not torch.equal(a[n], b[n]) for n in later)
    assert all(torch.equal(linears[n].weight, before[n]) for n in linears)
    # G is the dense model's in both modes: a G-only metric gives the same masks
    g_only = resolve_metric("abs(G)")[1]
    assert all(torch.equal(x, y) for x, y in zip(masks_of(dense, g_only).values(),
                                                 masks_of(seq, g_only).values()))


def test_an_unknown_calibration_mode_is_a_config_error(tiny_model):
    from pruner_zero.errors import ConfigError

    linears = prunable_linears(tiny_model)
    with pytest.raises(ConfigError, match="--calibration must be dense or sequential"):
        Engine(tiny_model, linears, {}, Structure(0.5), calibration="layerwise")
