"""workbench.py: the default cache directory, and the windows a Workbench leaves out of the
calibration split."""
from pathlib import Path


def test_an_empty_cache_variable_counts_as_unset(monkeypatch):
    from pruner_zero.workbench import default_cache_dir

    monkeypatch.setenv("PRUNER_ZERO_CACHE", "")
    assert default_cache_dir() == Path.home() / ".cache" / "pruner_zero"


def test_the_workbench_excludes_calibration_windows_only_on_the_calibration_split(tiny_dir):
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               calib_split="valid", nsamples=4, seqlen=16, device="cpu"),
                      progress=False, log=lambda m: None)
    full = bench._tokens("valid").numel() // 16
    assert bench.split_windows("valid").shape[0] < full
    assert bench.split_windows("test").shape[0] == bench._tokens("test").numel() // 16
    other = bench.variant(seed=1)  # another calibration: other windows left out, same model
    assert other.model is bench.model and other.calib_starts != bench.calib_starts
