"""The perplexity cache: a comparison run again (or after a stop) reads back what it measured,
keyed by all the number depends on; a damaged or unwritable cache costs nothing but itself."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_tiny_assets
from pruner_zero import measure
from pruner_zero.compare import compare
from pruner_zero.runtime import Runtime
from pruner_zero.tasks import Task

METRICS = ["magnitude", "wanda", "mul(W, X)"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_tiny_assets(tmp_path_factory.mktemp("pplcache"))


def _task(assets: Path, **kw) -> Task:
    base = dict(model=str(assets / "tiny-llama"), data_dir=str(assets / "data"), nsamples=2,
                seqlen=16, sparsity=0.5, calib_split="train")
    return Task(**{**base, **kw})


def _run(assets, cache, tasks=None, metrics=METRICS, seeds=2, **kw):
    logged: list[str] = []
    result = compare(metrics, tasks or [_task(assets)], seeds=seeds, cache_dir=cache,
                     runtime=Runtime(device="cpu"), progress=False, log=logged.append, **kw)
    return result, logged


def _counting(monkeypatch) -> list[tuple]:
    """Record every perplexity actually measured (not read from the cache)."""
    calls: list[tuple] = []
    original = measure.TaskBenches._measure

    def counted(self, bench, task, seed, metric, *args):
        calls.append((task.sparsity, seed, None if metric is None else str(metric)))
        return original(self, bench, task, seed, metric, *args)

    monkeypatch.setattr(measure.TaskBenches, "_measure", counted)
    return calls


def test_a_comparison_run_again_reads_every_perplexity_back(assets, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    calls = _counting(monkeypatch)
    first, _ = _run(assets, cache)
    assert len(calls) == 1 + 3 * 2  # dense, then 3 metrics x 2 seeds
    records = [json.loads(f.read_text()) for f in cache.glob("ppl-*.json")]
    assert len(records) == 7
    dense = [r for r in records if r["metric"] == "dense"]
    assert len(dense) == 1 and "recipe" not in dense[0] and "structure" not in dense[0]
    assert sorted(r["metric"] for r in records if r["metric"] != "dense") == sorted(
        ["mul(W, X)"] * 2 + [first["metrics"][0]["formula"]] * 2 + [first["metrics"][1]["formula"]] * 2)
    again, logged = _run(assets, cache)
    assert len(calls) == 7  # nothing measured the second time
    assert again["rows"] == first["rows"] and again["dense"] == first["dense"]
    assert any("6 of 6 perplexities read from the cache" in m for m in logged)
    plain, _ = _run(assets, None)  # no cache: the same numbers
    assert plain["rows"] == first["rows"]


def test_a_stopped_comparison_measures_only_what_it_had_not(assets, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    measured: list[int] = []
    original = measure.TaskBenches._measure

    def stopped_at_the_fifth(self, *args):
        if len(measured) == 4:
            raise KeyboardInterrupt
        measured.append(1)
        return original(self, *args)

    monkeypatch.setattr(measure.TaskBenches, "_measure", stopped_at_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        _run(assets, cache)
    assert len(measured) == 4  # the dense model and 3 of 6 cells finished
    monkeypatch.setattr(measure.TaskBenches, "_measure", original)
    calls = _counting(monkeypatch)
    resumed, _ = _run(assets, cache)
    assert len(calls) == 3  # the stopped cell and the two after it; the dense one is kept
    assert resumed["rows"] == _run(assets, None)[0]["rows"]


@pytest.mark.parametrize("change", ["sparsity", "structure", "metric", "update", "calibration",
                                    "seed", "windows", "batch_size", "seqlen"])
def test_anything_a_number_depends_on_is_measured_anew(assets, tmp_path, monkeypatch, change):
    cache = tmp_path / "cache"
    _run(assets, cache, metrics=["wanda"], seeds=1)
    calls = _counting(monkeypatch)
    task, kw, metrics = {}, {}, ["wanda"]
    if change == "sparsity":
        task = dict(sparsity=0.6)
    elif change == "structure":
        task = dict(structure="2:4", sparsity=None)
    elif change == "metric":
        metrics = ["mul(abs(W), X)"]  # ranks as wanda does, but another formula: another key
    elif change == "update":
        from pruner_zero.recipe import Recipe
        kw = dict(recipe=Recipe(update="obs"))
    elif change == "calibration":
        task = dict(calibration="sequential")
    elif change == "seed":
        task = dict(seed=1)
    elif change == "windows":
        kw = dict(eval_windows=2)
    elif change == "seqlen":
        task = dict(seqlen=8)
    else:
        kw = dict(runtime=Runtime(device="cpu", batch_size=3))
    logged: list[str] = []
    compare(metrics, [_task(assets, **task)], seeds=1, cache_dir=cache,
            **{"runtime": Runtime(device="cpu"), **kw}, progress=False, log=logged.append)
    pruned = [c for c in calls if c[2] is not None]
    assert len(pruned) == 1, change
    dense_again = change in ("windows", "batch_size", "seqlen")  # the dense model: its windows, batches
    assert len(calls) == 1 + dense_again, change


def test_a_damaged_cache_file_is_measured_again(assets, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    first, _ = _run(assets, cache, metrics=["wanda"], seeds=1)
    for f in cache.glob("ppl-*.json"):
        f.write_text("{not json")
    calls = _counting(monkeypatch)
    again, logged = _run(assets, cache, metrics=["wanda"], seeds=1)
    assert len(calls) == 2 and again["rows"] == first["rows"]
    assert sum("measuring again" in m for m in logged) == 2


def test_an_unwritable_cache_costs_only_the_cache(assets, tmp_path, monkeypatch):
    import pruner_zero.ppl_cache as ppl_cache

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ppl_cache, "atomic_write_json", full)
    result, logged = _run(assets, tmp_path / "cache", metrics=["wanda"], seeds=1)
    assert result["rows"][0]["ppl"] > 1 and not list((tmp_path / "cache").glob("ppl-*.json"))
    assert any("not cached" in m and "No space left" in m for m in logged)
