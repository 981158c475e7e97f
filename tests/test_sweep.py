"""The sweep (`--update sweep`): SparseGPT's solver in which the metric chooses each block's mask
on the weights as updated so far, and the terminal H (SparseGPT's curvature). With
``mul(sqr(W), H)`` the sweep is SparseGPT; block masks add up to the layer's count; the sweep's
masks rebuilt by "obs" are the sweep's model."""
import json

import pytest
import torch
from conftest import run_main

from pruner_zero.masks import Structure, block_mask, make_mask
from pruner_zero.sparsegpt import HessianAccumulator, obs_curvature, obs_sweep, sparsegpt_weight


def _layer(seed: int, rows: int = 16, cols: int = 256):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(512, cols, generator=g)
    return W, 2 * X.t() @ X / 512


@pytest.mark.parametrize("compare", ["row", "layer"])
@pytest.mark.parametrize("width,sparsity", [(300, 0.7), (256, 0.5), (129, 0.33), (1000, 0.9)])
def test_block_masks_add_up_to_what_the_whole_layer_prunes(width, sparsity, compare):
    structure = Structure(sparsity, compare=compare)
    scores = torch.rand(7, width, generator=torch.Generator().manual_seed(width))
    parts = [block_mask(scores[:, a:min(a + 128, width)], structure, a, min(a + 128, width),
                     width) for a in range(0, width, 128)]
    mask = torch.cat(parts, dim=1)
    whole = make_mask(scores, structure)
    if compare == "row":
        assert torch.equal(mask.sum(dim=1), whole.sum(dim=1))
    assert int(mask.sum()) == int(whole.sum())


def test_the_curvature_terminal_is_sparsegpts_and_its_saliency_is_sparsegpts_choice():
    """mul(sqr(W), H) chooses 2:4 masks as SparseGPT does; the sweep under it is SparseGPT."""
    from pruner_zero.metric.io import parse_formula
    from pruner_zero.metric.tree import score_metric

    W, H = _layer(3)
    tree = parse_formula("mul(sqr(W), H)")
    structure = Structure(0.5, n=2, m=4)
    curvature = obs_curvature(H)

    def choose(cols, a, b):
        scores = score_metric(tree, {"W": cols.abs(), "H": curvature[a:b]})
        return block_mask(scores, structure, a, b, W.shape[1])

    weight, mask = obs_sweep(W, H, structure, choose)
    own = sparsegpt_weight(W, H, structure)
    assert torch.equal(mask, own == 0)
    assert torch.allclose(weight, own, rtol=0, atol=1e-6)


def test_the_statistic_h_is_the_curvature_of_the_inputs_hessian(tiny_model):
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(0))
    seen = {n: HessianAccumulator(m.in_features, torch.device("cpu")) for n, m in linears.items()}
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: seen[n].add(args[0]))
             for n, m in linears.items()]
    with torch.no_grad():
        for w in calib:
            tiny_model(input_ids=w.unsqueeze(0))
    for h in hooks:
        h.remove()
    stats = compute_stats(tiny_model, linears, calib, progress=False, which={"H"})
    for n in linears:
        assert set(stats[n]) == {"H"}
        assert torch.allclose(stats[n]["H"], obs_curvature(seen[n].H), rtol=1e-5)


def test_a_cache_of_x_and_g_never_serves_h(tiny_model, tmp_path):
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import get_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    logs = []
    get_stats(tiny_model, linears, calib, "tiny", tmp_path, progress=False, log=logs.append)
    both = get_stats(tiny_model, linears, calib, "tiny", tmp_path, progress=False,
                     log=logs.append, which={"X", "H"})
    assert all(set(s) == {"X", "H"} for s in both.values())
    assert not any("recomputing" in line for line in logs)
    again = get_stats(tiny_model, linears, calib, "tiny", tmp_path, progress=False,
                      log=logs.append, which={"X", "H"})
    assert "loaded from cache" in logs[-1]
    assert all(torch.equal(again[n]["H"], both[n]["H"]) for n in linears)


@pytest.mark.parametrize("structure", [Structure(0.6), Structure(0.6, compare="layer"),
                                       Structure(0.5, n=2, m=4)])
def test_the_engine_sweep_keeps_its_counts_and_restores_exactly(tiny_model, structure):
    from pruner_zero.engine import Engine
    from pruner_zero.metric.io import parse_formula
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(2))
    stats = compute_stats(tiny_model, linears, calib, progress=False, which={"X", "H"})
    dense = {n: m.weight.detach().clone() for n, m in linears.items()}
    tree = parse_formula("mul(sqr(W), add(H, X))")
    plain = Engine(tiny_model, linears, stats, structure)
    counts = {n: int(m.sum()) for n, m in zip(linears, (plain._layer_mask(n, tree, "m", stats[n])
                                                        for n in linears))}
    engine = Engine(tiny_model, linears, stats, structure, calib=calib, keep="copy",
                    update="sweep")
    engine.prune(tree)
    for n, m in linears.items():
        assert int((m.weight == 0).sum()) == counts[n]  # the layer's count, block by block
    engine.restore()
    assert all(torch.equal(m.weight, dense[n]) for n, m in linears.items())


def test_a_sweep_genome_search_is_exact_with_caches_on_or_off_and_prune_reproduces_it(
        tiny_dir, capsys):
    """The sweep as a gene beside obs, over a space with H, blocks ranked over all their rows
    (SparseGPT's way): equal searches with caches on and off, and the exported recipe pruned
    again with the --compare best_metric.txt names gives the search's report number."""
    from conftest import checkpoint, hall_of_fame, protocol

    space = tiny_dir / "space-h.yaml"
    space.write_text("name: h\nterminals: [W, X, H]\nunary_ops: [sqr, sqrt]\n"
                     "binary_ops: [add, mul]\ninit_min_depth: 1\ninit_max_depth: 3\n"
                     "max_height: 5\nmax_size: 15\n")

    def search(out, *extra):
        return run_main(capsys, "search", *protocol(tiny_dir), "--space", str(space),
                        "--population", "6", "--generations", "1", "--gp-seed", "2",
                        "--fitness-windows", "0", "--hof-size", "3", "--final-top", "1",
                        "--polish", "0", "--confirm-seeds", "1", "--sparsity", "0.6",
                        "--recipe-space", "uniform/sweep,uniform/obs", "--baselines", "wanda",
                        "--compare", "layer",
                        "--seed-metrics", "mul(sqr(W), H)", "--out", str(out), *extra)

    on, off = tiny_dir / "runs" / "s-on", tiny_dir / "runs" / "s-off"
    code, _, err = search(on)
    assert code == 0, err
    assert search(off, "--no-canonical-cache", "--no-fingerprint-cache")[0] == 0
    assert hall_of_fame(on) == hall_of_fame(off)
    final = checkpoint(on)["final"]
    assert final == checkpoint(off)["final"]
    records = [json.loads(line) for line in (on / "evaluations.jsonl").read_text().splitlines()]
    assert any(r["formula"].endswith(" @ uniform/sweep") for r in records)
    reported = [r for r in final["report_rows"] if r["metric"] == final["best"]]
    assert "give prune --compare layer too" in (on / "best_metric.txt").read_text()
    code, stdout, err = run_main(capsys, "prune", *protocol(tiny_dir), "--metric", str(on),
                                 "--sparsity", "0.6", "--compare", "layer", "--eval-windows",
                                 str(reported[0]["windows"]))
    assert code == 0, err
    assert json.loads(stdout.splitlines()[0])["ppl"] == reported[0]["ppl"]


def test_sparsegpts_saliency_ranked_over_the_block_is_sparsegpts_choice_up_to_its_rounding():
    """Unstructured, blocks ranked over all their rows: SparseGPT's threshold prunes one weight
    more per block than its share (and its ties); otherwise the same masks."""
    from pruner_zero.metric.io import parse_formula
    from pruner_zero.metric.tree import score_metric

    W, H = _layer(5, rows=32, cols=384)
    tree = parse_formula("mul(sqr(W), H)")
    structure = Structure(0.5, compare="layer")
    curvature = obs_curvature(H)

    def choose(cols, a, b):
        return block_mask(score_metric(tree, {"W": cols.abs(), "H": curvature[a:b]}), structure,
                          a, b, W.shape[1])

    _, mask = obs_sweep(W, H, structure, choose)
    own = sparsegpt_weight(W, H, structure) == 0
    assert int(mask.sum()) == W.numel() // 2
    assert int((mask != own).sum()) <= 0.01 * W.numel()


def test_a_metric_constant_over_a_layer_is_refused_under_the_sweep_too(tiny_model):
    from pruner_zero.engine import Engine
    from pruner_zero.errors import MetricError
    from pruner_zero.metric.io import parse_formula
    from pruner_zero.model import prunable_linears
    from pruner_zero.stats import compute_stats

    linears = prunable_linears(tiny_model)
    calib = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    stats = compute_stats(tiny_model, linears, calib, progress=False, which={"X"})
    dense = {n: m.weight.detach().clone() for n, m in linears.items()}
    engine = Engine(tiny_model, linears, stats, Structure(0.5), calib=calib, keep="copy",
                    update="sweep")
    with pytest.raises(MetricError, match="constant"):
        engine.prune(parse_formula("coln(X)"))
    assert all(torch.equal(m.weight, dense[n]) for n, m in linears.items())


def test_a_sweep_candidate_walks_once_from_its_fingerprint_to_its_fitness(tiny_dir, monkeypatch):
    """A search fingerprints each offspring before measuring it: under the sweep the fingerprint
    is a walk, and what it kept is put back for the measurement (one walk, not two); with no
    room to keep the weights, a walk under the masks rebuilds them: the same fitness."""
    from pruner_zero import engine as engine_mod
    from pruner_zero.engine import Engine
    from pruner_zero.metric.io import parse_formula
    from pruner_zero.search import memo
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)
    walks = []
    original = engine_mod.walk
    monkeypatch.setattr(engine_mod, "walk", lambda *a, **k: walks.append(1) or original(*a, **k))
    tree = parse_formula("mul(W, sqrt(X))")

    def evaluator():
        engine = Engine(bench.model, bench.linears, bench.stats, Structure(0.5), calib=bench.calib,
                        keep="copy", update="sweep")
        return FitnessEvaluator(bench, Structure(0.5), fitness_windows=4, engine=engine)

    fresh = evaluator().evaluate(tree)
    for room, expected in ((memo.WALKED_MEMO_BYTES, 1), (0, 2)):
        monkeypatch.setattr(memo, "WALKED_MEMO_BYTES", room)
        walks.clear()
        ev = evaluator()
        ev.fingerprint(tree)
        result = ev.evaluate(tree)
        assert len(walks) == expected and result.fitness == fresh.fitness
        assert ev.memo.walked_bytes == 0 and not ev.memo.held
