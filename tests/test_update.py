"""The OBS update under a fixed mask (`--update obs`): SparseGPT's solver run with any
metric's masks. With nothing pruned it changes nothing; with SparseGPT's own mask it gives
SparseGPT's weights; in the engine it keeps the metric's masks and restores exactly."""
import json

import pytest
import torch
from conftest import base_args, masks_of, run_main

from pruner_zero import sparsegpt
from pruner_zero.masks import Structure
from pruner_zero.sparsegpt import lsq_weight, sparsegpt_weight


def _layer(seed: int, rows: int = 16, cols: int = 256):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(512, cols, generator=g)
    return W, 2 * X.t() @ X / 512  # a Hessian with no dead column


@pytest.mark.parametrize("seed", range(3))
def test_an_update_with_nothing_pruned_leaves_the_weights_as_they_were(seed):
    W, H = _layer(seed)
    kept = sparsegpt_weight(W, H, Structure(0.5), mask=torch.zeros_like(W, dtype=torch.bool))
    assert torch.equal(kept, W)


@pytest.mark.parametrize("structure", [Structure(0.5), Structure(0.7), Structure(0.5, n=2, m=4)])
def test_an_update_under_sparsegpts_own_mask_gives_sparsegpts_weights(structure):
    W, H = _layer(7)
    own = sparsegpt_weight(W, H, structure)
    again = sparsegpt_weight(W, H, structure, mask=own == 0)
    assert torch.equal(again, own)


def test_the_engine_keeps_the_metrics_masks_updates_the_rest_and_restores_exactly(tiny_model):
    from pruner_zero.engine import Engine
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    tree = resolve_metric("magnitude")[1]  # its masks do not depend on the walk
    dense = {n: m.weight.detach().clone() for n, m in linears.items()}
    plain = masks_of(Engine(tiny_model, linears, stats, Structure(0.5)), tree)
    engine = Engine(tiny_model, linears, stats, Structure(0.5), calib=calib, keep="copy",
                    update="obs")
    engine.prune(tree)
    for n, m in linears.items():
        assert torch.equal(m.weight == 0, plain[n])  # the metric's mask, nothing more
        kept = ~plain[n]
        assert not torch.equal(m.weight[kept], dense[n][kept])  # the kept weights moved
    engine.restore()
    assert all(torch.equal(m.weight, dense[n]) for n, m in linears.items())
    with pytest.raises(ValueError, match="from a copy"):
        Engine(tiny_model, linears, stats, Structure(0.5), calib=calib, keep="host", update="obs")


@pytest.mark.parametrize("update,metric", [("obs", "wanda"), ("sweep", "mul(sqr(W), H)"),
                                           ("lsq", "wanda"), ("sweep-lsq", "mul(sqr(W), H)")])
def test_prune_with_an_update_is_recorded_and_refused_with_sparsegpt(tiny_dir, capsys, tmp_path,
                                                                     update, metric):
    report = tmp_path / "r.json"
    code, _, err = run_main(capsys, "prune", *base_args(tiny_dir, "--metric", metric,
                                                        "--update", update, "--sparsity", "0.5",
                                                        "--report", str(report)))
    assert code == 0, err
    r = json.loads(report.read_text())
    assert r["update"] == update and r["sparsity"] == pytest.approx(0.5, abs=0.02)
    code, _, err = run_main(capsys, "prune", *base_args(tiny_dir, "--metric", "sparsegpt",
                                                        "--update", update))
    assert code == 2 and "sparsegpt updates its own" in err


@pytest.mark.parametrize("update", ["obs", "sweep", "lsq", "sweep-lsq"])
@pytest.mark.parametrize("calibration", ["dense", "sequential"])
def test_masks_scored_first_then_pruned_with_give_the_same_updated_model(tiny_model, calibration,
                                                                         update, monkeypatch):
    """A search fingerprints a candidate's masks on the dense statistics, then prunes with them:
    under an update that must be the model a prune of the metric gives, bit for bit."""
    from pruner_zero import engine as engine_mod
    from pruner_zero.engine import Engine
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    tree = resolve_metric("wanda")[1]
    engine = Engine(tiny_model, linears, stats, Structure(0.6), calibration, calib=calib,
                    keep="copy", update=update)
    dense = {n: m.weight.detach().clone() for n, m in linears.items()}
    fp = engine.prune(tree)
    pruned = {n: m.weight.detach().clone() for n, m in linears.items()}
    engine.restore()
    masks = engine.packed_masks(tree)
    assert masks.fingerprint == fp
    walked = calibration == "sequential" or update.startswith("sweep")
    assert (masks.walked is not None) == walked  # what the walk left, so it need not walk again
    # host tensors, with no autograd record holding a full-size mask on the weights' device
    assert not any(v.requires_grad or v.grad_fn is not None for v in (masks.walked or {}).values())
    walks = []
    original = engine_mod.walk
    monkeypatch.setattr(engine_mod, "walk", lambda *a, **k: walks.append(1) or original(*a, **k))
    for given in (masks, masks.without_walked()):  # put back, or rebuilt by a walk under the masks
        walks.clear()
        assert engine.prune_with(given) == fp
        assert all(torch.equal(m.weight, pruned[n]) for n, m in linears.items())
        assert len(walks) == (0 if given.walked is not None else 1)
        engine.restore()
        assert all(torch.equal(m.weight, dense[n]) for n, m in linears.items())


# ----------------------------------------------------------------------------- lsq
def _error(W, W0, H, percdamp=0.01):
    """The objective lsq_weight minimizes: (W - W0)(H + λI)(W - W0)ᵀ, summed over rows."""
    Hd = H.double() + percdamp * H.diag().double().mean() * torch.eye(H.shape[0], dtype=torch.float64)
    D = W.double() - W0.double()
    return float(((D @ Hd) * D).sum())


def _masks(W, H):
    """A 2:4 mask, a per-row 50% mask and a layer-wide 70% mask (rows keep unequal counts)."""
    score = W.abs() * H.diag().sqrt()
    groups = score.reshape(W.shape[0], -1, 4)
    nm = torch.zeros_like(groups, dtype=torch.bool).scatter_(
        -1, groups.topk(2, dim=-1, largest=False)[1], True).reshape(W.shape)
    row = score <= score.kthvalue(W.shape[1] // 2, dim=1, keepdim=True)[0]
    layer = score <= score.flatten().kthvalue(int(0.7 * score.numel()))[0]
    return {"2:4": nm, "row 50%": row, "layer 70%": layer}


@pytest.mark.parametrize("seed", range(2))
def test_lsq_is_each_rows_exact_least_squares_under_its_mask(seed):
    W, H = _layer(seed, rows=12, cols=64)
    Hd = H.double() + 0.01 * H.diag().double().mean() * torch.eye(64, dtype=torch.float64)
    for name, mask in _masks(W, H).items():
        got = lsq_weight(W, H, mask)
        assert torch.equal(got[mask], torch.zeros(int(mask.sum()))), name  # the mask, exactly
        want = torch.zeros(W.shape, dtype=torch.float64)
        for r in range(W.shape[0]):  # w_K = w0_K + H_KK⁻¹ H_KP w0_P, row by row in float64
            K, P = ~mask[r], mask[r]
            w0 = W[r].double()
            want[r, K] = w0[K] + torch.linalg.solve(Hd[K][:, K], Hd[K][:, P] @ w0[P])
        assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4), name
        assert (mask.sum(1) != mask.sum(1)[0]).any() or name != "layer 70%"  # uneven rows tried


def test_lsq_in_small_chunks_of_unequal_widths_equals_one_chunk(monkeypatch):
    """Rows go widest first, each chunk padded to its own widest row: chunking changes nothing."""
    W, H = _layer(5, rows=12, cols=64)
    mask = _masks(W, H)["layer 70%"]
    mask[3] = True  # a row with nothing kept
    mask[7, :60] = False  # and a row far wider than the rest
    whole = lsq_weight(W, H, mask)
    monkeypatch.setattr(sparsegpt, "LSQ_CHUNK_ELEMENTS", 3 * 20 * 20)
    chunked = lsq_weight(W, H, mask)
    assert torch.equal(chunked[mask], torch.zeros(int(mask.sum())))
    assert torch.allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_batched_solve_split_over_threads_equals_one_call_and_restores_the_threads():
    g = torch.Generator().manual_seed(6)
    X = torch.randn(7, 40, 24, generator=g)
    A = X.mT @ X + torch.eye(24)
    b = torch.randn(7, 24, 1, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        got = sparsegpt._factor_solve(A, b)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(got, torch.linalg.solve(A, b), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_lsq_reconstructs_no_worse_than_sparsegpts_sweep_under_the_same_mask(seed):
    W, H = _layer(seed)
    for name, mask in _masks(W, H).items():
        structure = Structure(0.5, n=2, m=4) if name == "2:4" else Structure(0.5)
        obs = sparsegpt_weight(W, H, structure, mask=mask)
        assert _error(lsq_weight(W, H, mask), W, H) <= _error(obs, W, H) * (1 + 1e-6), name


def test_lsq_with_nothing_pruned_or_everything_pruned():
    W, H = _layer(3)
    assert torch.equal(lsq_weight(W, H, torch.zeros_like(W, dtype=torch.bool)), W)
    assert torch.equal(lsq_weight(W, H, torch.ones_like(W, dtype=torch.bool)), torch.zeros_like(W))


def test_lsq_zeroes_dead_columns_as_sparsegpt_does():
    W, H = _layer(4, rows=8, cols=32)
    H[:, 5] = 0
    H[5, :] = 0  # input 5 never active
    mask = torch.zeros_like(W, dtype=torch.bool)
    mask[:, ::4] = True
    got = lsq_weight(W, H, mask)
    assert torch.equal(got[:, 5], torch.zeros(8)) and torch.isfinite(got).all()
