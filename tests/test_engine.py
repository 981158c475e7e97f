"""Apply/restore, fingerprints and layer-by-layer calibration on a tiny random LLaMA."""
import pytest
import torch

from pruner_zero.engine import Engine, measure_sparsity
from pruner_zero.masks import mask_fingerprint
from pruner_zero.masks import Structure
from pruner_zero.metric.io import parse_formula, resolve_metric
from pruner_zero.model import prunable_linears
from pruner_zero.stats import compute_stats

from conftest import masks_of


@pytest.fixture(params=["host", "copy"])
def engine(tiny_model, request):
    """Both ways of undoing a prune: the zeroed values and their bits, or a dense copy."""
    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    return Engine(tiny_model, linears, stats, Structure(0.5), keep=request.param)


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


def test_prune_keeps_only_what_it_zeroed_or_one_dense_copy(engine):
    """The restore record of a 50% prune: the zeroed values and a 1-bit mask per weight
    (``keep="host"``), or one dense host copy of the linear weights and nothing per prune."""
    engine.prune(resolve_metric("wanda")[1])
    try:
        if engine.keep == "copy":
            assert not engine._undo and set(engine.dense) == set(engine.linears)
            assert all(torch.equal(engine.dense[n].ne(0), m.weight.ne(0) | engine.dense[n].ne(0))
                       and engine.dense[n].device.type == "cpu" for n, m in engine.linears.items())
            return
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


def test_engines_of_one_model_share_one_dense_copy_and_each_restores_exactly(tiny_model):
    """Two structures on one model (a search's tasks): one dense copy, filled by the first prune;
    pruning with either, in any order, and restoring gives back the dense weights bit for bit.
    A search on the CPU undoes this way (``undo_kind``)."""
    from pruner_zero.engine import undo_kind

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    assert undo_kind(linears) == "copy"
    shared: dict = {}
    half, most = (Engine(tiny_model, linears, stats, s, keep="copy", dense=shared)
                  for s in (Structure(0.5), Structure(0.7)))
    before = {n: m.weight.detach().clone() for n, m in linears.items()}
    for engine, metric in [(half, "wanda"), (most, "gblm"), (half, "magnitude"), (most, "wanda")]:
        engine.prune(resolve_metric(metric)[1])
        assert measure_sparsity(linears).overall == pytest.approx(engine.structure.sparsity, abs=0.02)
        engine.restore()
        assert all(torch.equal(before[n], m.weight) for n, m in linears.items())
    assert set(shared) == set(linears)
    assert all(shared[n].data_ptr() != m.weight.data_ptr() for n, m in linears.items())


@pytest.mark.parametrize("calibration", ["dense", "sequential"])
def test_packed_masks_prune_the_model_the_metric_prunes(tiny_model, calibration):
    """What a search fingerprints a candidate with, applied later: the same weights and
    fingerprint as pruning with the metric itself, and the model dense in between."""
    linears = prunable_linears(tiny_model)
    calib = _calib()
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    engine = Engine(tiny_model, linears, stats, Structure(0.7), calibration, calib, keep="copy")
    before = {n: m.weight.detach().clone() for n, m in linears.items()}
    tree = resolve_metric("wanda")[1]
    masks = engine.packed_masks(tree, "wanda")
    assert all(torch.equal(linears[n].weight, before[n]) for n in linears)
    assert masks.mask_nbytes == sum(-(-m.weight.numel() // 8) for m in linears.values())
    assert engine.fingerprint(tree) == masks.fingerprint
    assert engine.prune_with(masks) == masks.fingerprint
    assert engine.sparsity().overall == pytest.approx(0.7, abs=0.03)
    by_masks = {n: m.weight.detach().clone() for n, m in linears.items()}
    assert engine.prune(tree) == masks.fingerprint
    assert all(torch.equal(linears[n].weight, by_masks[n]) for n in linears)
    engine.restore()
    assert all(torch.equal(linears[n].weight, before[n]) for n in linears)
