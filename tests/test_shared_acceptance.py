"""Issue #2 acceptance on the real small LLaMA and WikiText-2 in ../shared (skipped when absent).

Reference values were measured with an independent implementation of the same protocol:
dense 95.37, magnitude 100.17 at 50% (both +-0.5%); wanda, gblm, pruner-zero within 3% of 99.7.
"""
import pytest

from conftest import SHARED_DATA, SHARED_MODEL, needs_shared

pytestmark = [needs_shared, pytest.mark.shared, pytest.mark.slow]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from pruner_zero.workbench import Protocol, Workbench

    return Workbench(Protocol(model=str(SHARED_MODEL), data_dir=str(SHARED_DATA),
                              calib_split="valid", eval_split="test", nsamples=32, seqlen=256,
                              seed=0, device="cpu", dtype="float32"),
                     cache_dir=tmp_path_factory.mktemp("cache"), progress=False,
                     log=lambda m: None)


def pruned_ppl(bench, metric: str, sparsity: float, windows: int | None = None) -> float:
    """Perplexity after pruning: on the whole split, or ``windows`` spread evenly over it."""
    from pruner_zero.engine import Engine
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric

    engine = Engine(bench.model, bench.linears, bench.stats, Structure(sparsity))
    engine.prune(resolve_metric(metric)[1])
    try:
        assert engine.sparsity().overall == pytest.approx(sparsity, abs=1e-3)
        return bench.perplexity(None if windows is None else bench.eval_windows(windows, True))
    finally:
        engine.restore()


def test_dense_perplexity(bench):
    assert bench.eval_windows().shape[0] == 1365
    assert bench.perplexity() == pytest.approx(95.37, rel=0.005)


def test_magnitude_at_50(bench):
    assert pruned_ppl(bench, "magnitude", 0.5) == pytest.approx(100.17, rel=0.005)


@pytest.mark.parametrize("metric", ["wanda", "gblm", "pruner-zero"])
def test_activation_and_gradient_metrics_at_50(bench, metric):
    assert pruned_ppl(bench, metric, 0.5) == pytest.approx(99.7, rel=0.03)


def test_magnitude_worse_than_wanda_at_70(bench):
    # an order, not a level: 128 spread windows keep the whole split's verdict on this model
    # (experiments/README.md, "Why 64 and 128 windows"), at a tenth of its cost
    assert pruned_ppl(bench, "magnitude", 0.7, 128) > pruned_ppl(bench, "wanda", 0.7, 128)
