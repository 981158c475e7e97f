"""allocation.py: OWL's per-block sparsities (mean exactly the target, span 2λ, more outliers
keep more weights) and `prune --allocation`: what it records and what it refuses."""
import json
import math
import random

import pytest
import torch
from conftest import base_args, run_main

from pruner_zero.allocation import Allocation, block_index, outlier_ratio, owl_sparsities
from pruner_zero.errors import ConfigError


@pytest.mark.parametrize("seed", range(20))
def test_owl_sparsities_average_exactly_to_the_target_within_their_bounds(seed):
    rng = random.Random(seed)
    blocks, target, lam = rng.randint(2, 40), rng.uniform(0.3, 0.8), rng.uniform(0.01, 0.15)
    ratios = [rng.random() for _ in range(blocks)]
    s = owl_sparsities(ratios, target, lam)
    assert math.fsum(s) / blocks == pytest.approx(target, abs=1e-12)
    assert max(s) - min(s) == pytest.approx(2 * lam, abs=1e-12)  # the span is 2λ
    assert all(target - 2 * lam - 1e-12 <= x <= target + 2 * lam + 1e-12 for x in s)
    order = sorted(range(blocks), key=lambda i: ratios[i])  # more outliers, lower sparsity
    assert [s[i] for i in order] == sorted(s, reverse=True)


def test_equal_outlier_ratios_are_uniform_and_an_impossible_span_is_refused():
    assert owl_sparsities([0.2, 0.2, 0.2], 0.7, 0.08) == [0.7, 0.7, 0.7]
    with pytest.raises(ConfigError, match="outside \\(0, 1\\)"):
        owl_sparsities([0.0, 1.0], 0.05, 0.08)


def test_the_outlier_ratio_counts_scores_above_m_times_their_mean():
    scores = torch.tensor([1.0] * 98 + [100.0, 100.0])  # mean 2.98: two scores above 5x it
    assert outlier_ratio(scores, 5.0) == pytest.approx(0.02)
    assert outlier_ratio(scores, 50.0) == 0.0


def test_allocation_options_are_checked():
    for bad, message in ((Allocation("lamb"), "--allocation must be uniform, owl or a file"),
                         (Allocation("owl", owl_m=0), "--owl-m must be a positive"),
                         (Allocation("owl", owl_lambda=float("nan")), "--owl-lambda must be"),
                         (Allocation("owl", owl_lambda=0.5), "below 0.5")):
        with pytest.raises(ConfigError, match=message):
            bad.checked()
    assert block_index("model.layers.12.mlp.up_proj", "model.layers") == 12
    with pytest.raises(ConfigError, match="not in a decoder block"):
        block_index("lm_head", "model.layers")


def test_prune_with_owl_records_block_sparsities_that_average_to_the_target(tiny_dir, capsys,
                                                                              tmp_path):
    report, saved = tmp_path / "r.json", tmp_path / "saved"
    code, _, err = run_main(capsys, "prune", *base_args(tiny_dir, "--metric", "magnitude",
                                                        "--sparsity", "0.6", "--allocation",
                                                        "owl", "--owl-lambda", "0.1",
                                                        "--report", str(report),
                                                        "--save", str(saved)))
    assert code == 0, err
    r = json.loads(report.read_text())
    assert json.loads((saved / "pruning.json").read_text())["allocation"] == r["allocation"]
    blocks = r["allocation"]["block_sparsity"]
    assert r["allocation"]["kind"] == "owl" and len(blocks) == 2
    assert sum(blocks) / 2 == pytest.approx(0.6, abs=1e-12)
    assert max(blocks) - min(blocks) == pytest.approx(0.2, abs=1e-12)
    for name, achieved in r["sparsity_per_layer"].items():  # each layer at its block's
        assert achieved == pytest.approx(blocks[block_index(name, "model.layers")], abs=0.05)
    uniform = tmp_path / "u.json"
    assert run_main(capsys, "prune", *base_args(tiny_dir, "--metric", "magnitude", "--sparsity",
                                                "0.6", "--report", str(uniform)))[0] == 0
    assert "allocation" not in json.loads(uniform.read_text())


@pytest.mark.parametrize("extra, message", [
    (["--metric", "wanda", "--structure", "2:4"], "fixes every block's"),
    (["--metric", "sparsegpt"], "sparsegpt chooses its own"),
    (["--metric", "wanda", "--owl-lambda", "0.7"], "below 0.5"),
])
def test_prune_refuses_an_allocation_where_it_means_nothing(tiny_dir, capsys, monkeypatch,
                                                             extra, message):
    import pruner_zero.cli.prune as cli_prune

    def no_model(a):
        raise AssertionError("the model was loaded before the allocation was checked")

    monkeypatch.setattr(cli_prune, "workbench_from", no_model)
    code, _, err = run_main(capsys, "prune", *base_args(tiny_dir, *extra, "--allocation", "owl"))
    assert code == 2 and err.startswith("error:") and message in err


def test_an_engine_gives_each_layer_its_own_sparsity_and_a_uniform_one_changes_nothing(
        tiny_model):
    from conftest import masks_of

    from pruner_zero.engine import Engine
    from pruner_zero.masks import Structure
    from pruner_zero.metric.io import resolve_metric
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(0))
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    tree = resolve_metric("wanda")[1]
    plain = masks_of(Engine(tiny_model, linears, stats, Structure(0.5)), tree)
    same = masks_of(Engine(tiny_model, linears, stats, Structure(0.5),
                           sparsities={n: 0.5 for n in linears}), tree)
    assert all(torch.equal(plain[n], same[n]) for n in linears)
    own = {n: 0.25 if block_index(n, "model.layers") == 0 else 0.75 for n in linears}
    masks = masks_of(Engine(tiny_model, linears, stats, Structure(0.5), sparsities=own), tree)
    for n, mask in masks.items():  # every row prunes floor(sparsity x its width)
        assert mask.sum(dim=1).tolist() == [int(own[n] * mask.shape[1])] * mask.shape[0]


def test_a_blocks_outlier_ratio_is_the_same_one_linear_at_a_time():
    g = torch.Generator().manual_seed(3)
    parts = [torch.rand(8, 16, generator=g) ** 4, torch.rand(4, 32, generator=g) ** 4]
    whole = torch.cat([p.reshape(-1) for p in parts])
    for m in (1.0, 2.0, 5.0):
        assert outlier_ratio([lambda p=p: p for p in parts], m) == outlier_ratio(whole, m)
