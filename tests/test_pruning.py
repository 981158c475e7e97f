"""pruning.py: `prune`, the Python API of a prune: it runs, checks its arguments' types, and
refuses a decoder mostly outside nn.Linear unless allowed."""
import pytest
import torch


def test_the_readmes_python_entry_points_exist_and_run(tiny_dir):
    import pruner_zero

    report = pruner_zero.prune(str(tiny_dir / "tiny-llama"), "wanda", sparsity=0.5,
                               data_dir=str(tiny_dir / "data"), nsamples=2, seqlen=16,
                               device="cpu", log=lambda *_: None)
    assert report["sparsity"] == pytest.approx(0.5, abs=0.02) and report["ppl"] > 0
    assert callable(pruner_zero.search) and "prune" in pruner_zero.__all__


def test_python_api_arguments_of_the_wrong_type_are_config_errors(tiny_dir):
    from pruner_zero.pruning import prune
    from pruner_zero.errors import ConfigError

    common = dict(data_dir=str(tiny_dir / "data"), nsamples=2, seqlen=16, device="cpu",
                  log=lambda *_: None)
    for bad, message in (({"seed": "0"}, "seed must be an integer"),
                         ({"nsamples": 4.5}, "nsamples must be an integer"),
                         ({"structure": 24}, "--structure must be"),
                         ({"sparsity": [0.5]}, "--sparsity must be a number")):
        with pytest.raises(ConfigError, match=message):
            prune(str(tiny_dir / "tiny-llama"), "wanda", **{**common, **bad})


def test_a_decoder_mostly_outside_nn_linear_is_refused_unless_allowed(tiny_dir):
    from torch import nn

    from pruner_zero.pruning import prune
    from pruner_zero.errors import ConfigError
    from pruner_zero.model import decoder_layers
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu"), progress=False,
                      log=lambda *_: None)
    for block in decoder_layers(bench.model):  # experts as one 3-D tensor, as MoE models keep them
        block.register_parameter("experts", nn.Parameter(torch.zeros(4, 32, 64)))
    with pytest.raises(ConfigError, match=r"hold 5\d\.\d% of its parameters.*--allow-partial"):
        prune(bench, "wanda", dense=False, log=lambda *_: None)
    report = prune(bench, "wanda", dense=False, allow_partial=True, log=lambda *_: None)
    assert report["linear_share"] < 0.9
    assert report["decoder_sparsity"] == pytest.approx(report["sparsity"] * report["linear_share"])


def test_a_second_prune_to_the_same_save_is_refused_before_its_work(tiny_dir, monkeypatch):
    """Issue #22: two `prune --save` to one folder both did all their work and the loser failed
    only at the end. The save path is claimed first; the claim leaves no file behind."""
    from pruner_zero import pruning
    from pruner_zero.errors import ConfigError
    from pruner_zero.files import RunLock

    save = tiny_dir / "out" / "pruned"
    other = RunLock(save.parent, "prune --save", name=".pruned.saving", subject=save,
                    remove=True).acquire()  # another prune, still working
    loaded = []
    monkeypatch.setattr(pruning, "Workbench", lambda *a, **k: loaded.append(1))
    try:
        with pytest.raises(ConfigError, match="pruned is in use by another pruner-zero prune"):
            pruning.prune(str(tiny_dir / "tiny-llama"), "magnitude", save=save,
                          data_dir=str(tiny_dir / "data"), device="cpu")
    finally:
        other.release()
    assert not loaded and not save.exists()
    assert list(save.parent.iterdir()) == []
    monkeypatch.undo()
    pruning.prune(str(tiny_dir / "tiny-llama"), "magnitude", save=save, nsamples=2, seqlen=16,
                  data_dir=str(tiny_dir / "data"), device="cpu", log=lambda m: None)
    assert [p.name for p in save.parent.iterdir()] == ["pruned"]  # no claim file left


def test_a_full_disk_costs_the_cache_never_the_result(tiny_dir, monkeypatch):
    """Issue #22: `prune --cache-dir` on a full filesystem died in safetensors with no report;
    `--save` out of space was a traceback. The cache is optional (a warning, the run goes on);
    a save that fails is one error, and the report is still written."""
    import json

    from safetensors import SafetensorError

    from pruner_zero import pruning, stats
    from pruner_zero.errors import ConfigError

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    from pruner_zero.workbench import Protocol, Workbench

    monkeypatch.setattr(stats, "save_stats", full)
    logged, report = [], tiny_dir / "r.json"
    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               nsamples=2, seqlen=16, device="cpu"),
                      cache_dir=tiny_dir / "cache", progress=False, log=logged.append)
    result = pruning.prune(bench, "wanda", report=report, log=logged.append)
    assert result["ppl"] > 0 and json.loads(report.read_text())["ppl"] == result["ppl"]
    assert any("warning: statistics not cached" in m and "No space left" in m for m in logged)
    monkeypatch.setattr(pruning, "save_pruned", full)
    report.unlink()
    with pytest.raises(ConfigError, match="cannot save the pruned model to .*No space left.*"
                                          "the report .* was written"):
        pruning.prune(str(tiny_dir / "tiny-llama"), "magnitude", save=tiny_dir / "saved",
                      report=report, nsamples=2, seqlen=16, data_dir=str(tiny_dir / "data"),
                      device="cpu", log=lambda m: None)
    written = json.loads(report.read_text())
    assert written["ppl"] > 0 and "No space left" in written["save_error"]
    assert "saved_to" not in written
