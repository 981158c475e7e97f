"""X and G against a direct computation on a tiny random LLaMA."""
import torch
from torch import nn

from pruner_zero.model import prunable_linears
from pruner_zero.stats import GradientNorm, SquaredInputMean, compute_stats


def test_accumulators_match_definitions():
    torch.manual_seed(0)
    a, b = torch.randn(2, 5, 3), torch.randn(1, 7, 3)
    acc = SquaredInputMean(3, torch.device("cpu"))
    acc.add(a)
    acc.add(b)
    tokens = torch.cat([a.reshape(-1, 3), b.reshape(-1, 3)])
    assert torch.allclose(acc.value(), (tokens ** 2).mean(dim=0))
    g = GradientNorm(torch.Size([2, 2]), torch.device("cpu"))
    grads = [torch.randn(2, 2) for _ in range(4)]
    for x in grads:
        g.add(x)
    assert torch.allclose(g.value(), torch.stack(grads).norm(dim=0))


def test_X_and_G_equal_direct_computation(tiny_model):
    torch.manual_seed(3)
    calib = torch.randint(0, 64, (3, 12))
    linears = prunable_linears(tiny_model)
    stats = compute_stats(tiny_model, linears, calib, progress=False)
    # the model is left as it was: no gradients, trainable flags restored
    assert all(p.grad is None for p in tiny_model.parameters())
    assert all(p.requires_grad for p in tiny_model.parameters())

    # direct: capture inputs of every linear, and per-sample gradients, by hand
    name = "model.layers.1.mlp.down_proj"
    lin = linears[name]
    inputs, grads = [], []
    h = lin.register_forward_hook(lambda m, a, o: inputs.append(a[0].detach().reshape(-1, lin.in_features)))
    for window in calib:
        tiny_model.zero_grad()
        ids = window[None]
        logits = tiny_model(input_ids=ids).logits
        loss = nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
        loss.backward()
        grads.append(lin.weight.grad.detach().clone())
    h.remove()
    X = (torch.cat(inputs) ** 2).mean(dim=0)
    G = torch.stack(grads).pow(2).sum(dim=0).sqrt()
    assert torch.allclose(stats[name]["X"], X, rtol=1e-5, atol=1e-8)
    assert torch.allclose(stats[name]["G"], G, rtol=1e-4, atol=1e-9)
    assert stats[name]["G"].shape == lin.weight.shape and stats[name]["X"].shape == (lin.in_features,)


# ------------------------------------------------------------------ the on-disk cache (issue 12)

import json
import subprocess
import sys

from pruner_zero.cli import main


def _prune(tiny_dir, cache, seed, capsys):
    code = main(["prune", "--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
                 "--nsamples", "2", "--seqlen", "16", "--device", "cpu", "--quiet", "--seed", str(seed),
                 "--cache-dir", str(cache), "--metric", "gblm"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)["ppl"], err


def test_a_cache_file_from_another_calibration_is_recomputed_not_used(tiny_dir, capsys):
    cache = tiny_dir / "cache"
    ppl0, _ = _prune(tiny_dir, cache, 0, capsys)
    (file0,) = cache.glob("stats-*.safetensors")
    ppl1, _ = _prune(tiny_dir, cache, 1, capsys)
    (file1,) = set(cache.glob("stats-*.safetensors")) - {file0}
    assert ppl1 != ppl0
    file1.write_bytes(file0.read_bytes())  # seed 0's statistics under seed 1's name
    again, err = _prune(tiny_dir, cache, 1, capsys)
    assert "computed for another calibration" in err and again == ppl1
    reused, err = _prune(tiny_dir, cache, 1, capsys)  # the rewritten entry is trusted again
    assert "loaded from cache" in err and reused == ppl1


KILL_DURING_CACHE_WRITE = """
import os, signal, sys
import safetensors.torch as st
real = st.save_file
def half_then_die(tensors, filename, metadata=None):
    real(tensors, filename, metadata=metadata)
    with open(filename, "r+b") as fh:
        fh.truncate(os.path.getsize(filename) // 2)
    os.kill(os.getpid(), signal.SIGKILL)
st.save_file = half_then_die
from pruner_zero.cli import main
main(sys.argv[1:])
"""


def test_sigkill_during_a_cache_write_leaves_no_entry_and_the_rerun_succeeds(tiny_dir):
    cache = tiny_dir / "cache"
    argv = ["prune", "--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--nsamples", "2", "--seqlen", "16", "--device", "cpu", "--quiet",
            "--cache-dir", str(cache), "--metric", "gblm"]
    killed = subprocess.run([sys.executable, "-c", KILL_DURING_CACHE_WRITE, *argv], capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()[-1000:]
    assert not list(cache.glob("stats-*.safetensors"))  # only the hidden half-written temporary
    assert len(list(cache.glob(".stats-*.tmp"))) == 1
    for expect in ("statistics: cached in", "statistics: loaded from cache"):
        again = subprocess.run([sys.executable, "-m", "pruner_zero", *argv], capture_output=True,
                               text=True)
        assert again.returncode == 0 and expect in again.stderr, again.stderr
    assert not list(cache.glob(".stats-*.tmp"))  # the dead writer's temporary was cleared


def test_only_the_statistics_a_metric_reads_are_measured(tiny_dir, capsys, monkeypatch):
    """wanda reads X: no backward pass (no gradient memory) and the same perplexity as when G
    is measured too; magnitude reads nothing: no calibration pass at all; gblm needs G."""
    import pruner_zero.stats as stats_mod

    backward_calls, forward_windows = [], []
    original_backward = torch.Tensor.backward
    monkeypatch.setattr(torch.Tensor, "backward",
                        lambda self, *a, **k: backward_calls.append(1) or original_backward(self, *a, **k))
    original_compute = stats_mod.compute_stats

    def counting(model, linears, calib, progress=True, which=stats_mod.CLASSIC, device=None):
        forward_windows.append((tuple(sorted(which)), calib.shape[0]))
        return original_compute(model, linears, calib, progress, which, device)

    monkeypatch.setattr(stats_mod, "compute_stats", counting)
    base = ["--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--nsamples", "2", "--seqlen", "16", "--device", "cpu", "--quiet", "--no-dense-ppl"]
    ppl = {}
    for metric in ("wanda", "magnitude", "gblm"):
        backward_calls.clear()
        forward_windows.clear()
        assert main(["prune", *base, "--no-cache", "--metric", metric]) == 0
        ppl[metric] = json.loads(capsys.readouterr().out)["ppl"]
        if metric == "wanda":
            assert backward_calls == [] and forward_windows == [(("X",), 2)]
        if metric == "magnitude":
            assert backward_calls == [] and forward_windows == [((), 2)]
        if metric == "gblm":
            assert len(backward_calls) == 2 and forward_windows == [(("G", "X"), 2)]
    # the X of a forward-only pass is the X of a forward+backward pass, to the last bit
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu"), progress=False)
    only_x = original_compute(bench.model, bench.linears, bench.calib, False, ("X",))
    both = original_compute(bench.model, bench.linears, bench.calib, False)
    assert all(torch.equal(only_x[n]["X"], both[n]["X"]) and "G" not in only_x[n] for n in both)


def test_a_cache_of_all_statistics_serves_a_metric_that_reads_fewer(tiny_dir, capsys):
    cache = tiny_dir / "cache"
    base = ["prune", "--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--nsamples", "2", "--seqlen", "16", "--device", "cpu", "--no-dense-ppl",
            "--cache-dir", str(cache)]
    assert main([*base, "--metric", "gblm"]) == 0
    assert "statistics: cached in" in capsys.readouterr().err
    assert main([*base, "--metric", "wanda"]) == 0  # X from the file of X and G
    err = capsys.readouterr().err
    assert "statistics: loaded from cache" in err and len(list(cache.glob("stats-*"))) == 1
    other = tiny_dir / "cache2"
    assert main([*base[:-1], str(other), "--metric", "wanda"]) == 0  # X alone, under its own key
    assert main([*base[:-1], str(other), "--metric", "gblm"]) == 0  # needs G: measured, cached
    assert len(list(other.glob("stats-*"))) == 2


def test_stats_dtype_and_device_place_G_the_cache_stays_float32(tiny_dir, tmp_path):
    import pytest
    from safetensors.torch import load_file

    from pruner_zero.errors import ConfigError
    from pruner_zero.workbench import Protocol, Workbench

    common = dict(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                  nsamples=2, seqlen=16, device="cpu")
    cache = tmp_path / "cache"
    full = Workbench(Protocol(**common), cache_dir=cache, progress=False,
                     log=lambda m: None).statistics({"X", "G"})
    half_bench = Workbench(Protocol(**common, stats_dtype="bfloat16", stats_device="cpu"),
                           cache_dir=cache, progress=False, log=lambda m: None)
    half = half_bench.statistics({"X", "G"})  # from the float32 cache the first bench wrote
    for name in full:
        assert half[name]["G"].dtype == torch.bfloat16 and half[name]["X"].dtype == torch.float32
        assert torch.equal(half[name]["G"], full[name]["G"].bfloat16())
        assert torch.equal(half[name]["X"], full[name]["X"])
    [path] = cache.glob("stats-*.safetensors")
    assert {t.dtype for t in load_file(str(path)).values()} == {torch.float32}
    assert half_bench.protocol.as_dict()["stats_dtype"] == "bfloat16"  # in every report
    with pytest.raises(ConfigError, match="--stats-dtype"):
        Workbench(Protocol(**common, stats_dtype="int8"), progress=False)
    with pytest.raises(ConfigError, match="--stats-device"):
        Workbench(Protocol(**common, stats_device="nowhere"), progress=False)


def test_caches_of_two_hub_revisions_are_apart(tiny_dir):
    from pruner_zero.stats import model_identity

    ids = {model_identity("org/model", r) for r in (None, "v1", "v2")}
    assert len(ids) == 3
    local = str(tiny_dir / "tiny-llama")  # a local directory is its files, whatever the revision
    assert model_identity(local, "v1") == model_identity(local) != local
