"""A real search on a tiny random LLaMA: SIGKILL mid-generation + --resume ends exactly like an
uninterrupted run; the run dir refuses mixing runs; the best metric prunes to the reported ppl."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import strict_loads

from pruner_zero.cli import main
from pruner_zero.search.rundir import BEST_JSON, BEST_TXT, CHECKPOINT, CONFIG, EVALUATIONS, HALL_OF_FAME

REPO = Path(__file__).resolve().parents[1]
GENERATIONS = 3


def protocol(tiny_dir: Path) -> list[str]:
    return ["--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--seqlen", "16", "--nsamples", "2", "--calib-split", "train", "--device", "cpu",
            "--cache-dir", str(tiny_dir / "stats-cache"), "--quiet"]


def search_args(tiny_dir: Path, out: Path) -> list[str]:
    # no evaluator caches and all windows: every candidate costs real forward passes, so a
    # generation lasts long enough to be killed in the middle of it
    return ["search", *protocol(tiny_dir), "--space", "small", "--population", "10",
            "--generations", str(GENERATIONS), "--gp-seed", "7", "--fitness-windows", "0",
            "--cx-prob", "0.9", "--mut-prob", "0.5", "--hof-size", "5", "--final-top", "2",
            "--seed-metrics", "wanda", "--no-canonical-cache", "--no-fingerprint-cache",
            "--confirm-seeds", "2", "--sparsity", "0.5,0.6", "--out", str(out)]  # two tasks


def hall_of_fame(path: Path) -> list[dict]:
    with open(path / HALL_OF_FAME, newline="") as fh:
        return list(csv.DictReader(fh))


def checkpoint(path: Path) -> dict:
    return json.loads((path / CHECKPOINT).read_text())


def kill_mid_generation(tiny_dir: Path, out: Path) -> None:
    """Start the search as a process; SIGKILL it once generation 1 has started but not ended."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "pruner_zero", *search_args(tiny_dir, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    log = out / EVALUATIONS
    deadline = time.time() + 120
    try:
        while proc.poll() is None and time.time() < deadline:
            if log.is_file() and '"generation": 1,' in log.read_text():
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]


def test_killed_and_resumed_search_ends_like_an_uninterrupted_one(tiny_dir, capsys):
    ref, killed = tiny_dir / "runs" / "ref", tiny_dir / "runs" / "killed"

    assert main(search_args(tiny_dir, ref)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hall_of_fame"] == 5 and summary["best"] is not None
    for name in (CONFIG, CHECKPOINT, EVALUATIONS, HALL_OF_FAME, BEST_JSON, BEST_TXT):
        assert (ref / name).is_file(), name

    kill_mid_generation(tiny_dir, killed)
    state = checkpoint(killed)
    lines = (killed / EVALUATIONS).read_text().count("\n")
    assert state["generation"] == 0 and not state["finished"]
    assert lines > state["evaluations_lines"]  # killed inside generation 1
    assert not (killed / HALL_OF_FAME).exists()

    assert main(["search", "--resume", str(killed), "--quiet"]) == 0
    capsys.readouterr()
    assert hall_of_fame(killed) == hall_of_fame(ref)
    a, b = checkpoint(killed), checkpoint(ref)
    assert a["hall_of_fame"] == b["hall_of_fame"] and a["population"] == b["population"]
    assert a["final"] == b["final"] and a["finished"] and a["generation"] == GENERATIONS
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if k != "seconds"}  # noqa: E731
                       for l in (p / EVALUATIONS).read_text().splitlines()]
    assert strip(killed) == strip(ref)  # the interrupted generation's lines were dropped, not doubled
    assert (killed / BEST_JSON).read_text() == (ref / BEST_JSON).read_text()
    for run in (ref, killed):  # every file we write is strict JSON (no Infinity / NaN)
        for path in run.glob("*.json"):
            strict_loads(path.read_text())
        for line in (run / EVALUATIONS).read_text().splitlines():
            strict_loads(line)

    rows = hall_of_fame(ref)
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [bool(r["selection"]) for r in rows] == [True, True, False, False, False]  # --final-top 2
    fitness = [float(r["fitness"]) for r in rows]
    assert fitness == sorted(fitness)
    # the best metric is the lowest mean selection score (over 2 calibration seeds) of the top 2
    best = min(rows[:2], key=lambda r: float(r["selection"]))
    assert [r["chosen"] for r in rows] == ["1" if r is best else "0" for r in rows]
    text = (ref / BEST_TXT).read_text()
    assert f"formula:   {best['formula']}" in text and "latex:" in text and "sympy:" in text
    assert f"rank:      {best['rank']} of 5" in text and "report split" in text

    # a finished run resumed just rewrites its outputs (no evaluation)
    (ref / HALL_OF_FAME).unlink()
    assert main(["search", "--resume", str(ref), "--quiet"]) == 0
    capsys.readouterr()
    assert hall_of_fame(ref) == rows

    # the best metric file prunes to the report-split perplexity the search reported for it
    # (calibration seed 0, the task's own)
    reported = [r for r in checkpoint(ref)["final"]["report_rows"]
                if r["metric"] == best["formula"] and r["seed"] == 0 and r["task"] == "tiny-llama@0.5"]
    assert main(["prune", *protocol(tiny_dir), "--metric", str(ref / BEST_JSON), "--sparsity", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(reported) == 1 and report["ppl"] == reported[0]["ppl"]
    config = json.loads((ref / CONFIG).read_text())
    assert config["gp"]["seed"] == 7 and config["tasks"][0]["seqlen"] == 16
    assert config["fitness"]["fitness_windows"] is None and config["seed_metrics"] == ["wanda"]


def test_a_new_search_refuses_a_directory_that_holds_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / CONFIG).write_text("{}")
    code = main(["search", "--model", str(tmp_path / "no-such-model"), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == (f"error: {out} already holds a search run; continue it with --resume {out} "
                           "or choose another --out directory.")


def test_resume_without_a_run_is_a_clear_error(tmp_path, capsys):
    code = main(["search", "--resume", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no search run to resume in") and "--out" in err
    assert len(err.strip().splitlines()) == 1


def test_resume_with_other_options_is_refused_not_ignored(tmp_path, capsys):
    code = main(["search", "--resume", str(tmp_path), "--generations", "30", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "drop --generations" in err and len(err.strip().splitlines()) == 1


def test_bad_search_options_fail_before_loading_the_model(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    for extra, message in ((["--elite", "30"], "--elite"), (["--space", "nope"], "unknown search space"),
                           (["--seed-metrics", "sparsegpt"], "sparsegpt"),
                           (["--space", "small", "--seed-metrics", "wanda,neg(mul(W, X))"], "outside the search space"),
                           ([], "--out")):
        out = [] if not extra else ["--out", str(tmp_path / "r")]
        code = main(["search", "--model", missing, *out, "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "model path not found" not in err, err


def test_python_api_returns_the_hall_of_fame(tiny_dir):
    import pruner_zero

    out = tiny_dir / "runs" / "api"
    entries = pruner_zero.search(str(tiny_dir / "tiny-llama"), out, generations=1, population=4,
                                 seed=1, space="small", fitness_windows=2, final_top=1, hof_size=3,
                                 data_dir=str(tiny_dir / "data"), seqlen=16, nsamples=2, device="cpu",
                                 progress=False, log=lambda m: None)
    assert 1 <= len(entries) <= 3
    assert [e.rank for e in entries] == list(range(1, len(entries) + 1))
    assert entries[0].score is not None and all(e.score is None for e in entries[1:])
    assert str(entries[0].tree) == entries[0].formula == hall_of_fame(out)[0]["formula"]
    assert json.loads((out / CONFIG).read_text())["tasks"][0]["seed"] == 1  # calib seed follows seed


@pytest.mark.parametrize("sparsity", [0.5, "0.5,0.7"], ids=["one task", "two tasks"])
def test_caches_and_racing_do_not_change_the_hall_of_fame(tiny_dir, sparsity):
    """Issue #4: with the canonical cache and the mask fingerprint on or off, the same seed
    gives the same hall of fame with the same fitness values; racing never lets a stopped
    candidate in, and the caches resolve some candidates without a full evaluation."""
    import pruner_zero
    from pruner_zero.workbench import Protocol, Workbench

    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               seqlen=16, nsamples=2, device="cpu", batch_size=2),
                      progress=False, log=lambda m: None)

    def run(name, **kw):
        out = tiny_dir / "runs" / name
        hof = pruner_zero.search(bench, out, generations=3, population=8, seed=3, space="small",
                                 fitness_windows=6, final_top=0, hof_size=4, race_chunk=2,
                                 sparsity=sparsity, confirm_seeds=1, baselines="",
                                 progress=False, log=lambda m: None, **kw)
        rows = [json.loads(l) for l in (out / "evaluations.jsonl").open()]
        return [(e.formula, e.fitness) for e in hof], rows

    on, rows_on = run("on", race_factor=1.05)
    off, rows_off = run("off", race_factor=1.05, canonical_cache=False, fingerprint_cache=False)
    assert on == off
    # not only the hall of fame: every candidate gets the same fitness, so selection is unchanged
    assert [(r["formula"], r["fitness"], r["status"]) for r in rows_on] == \
        [(r["formula"], r["fitness"], r["status"]) for r in rows_off]
    assert any(r["cached"] for r in rows_on) and not any(r["cached"] for r in rows_off)
    stopped = {r["formula"] for r in rows_on if r["status"] == "stopped_early"}
    assert not stopped & {f for f, _ in on}  # (racing of several tasks: test_engine)


def test_test_never_reaches_fitness_or_selection_and_baselines_are_in_every_result(tiny_dir, monkeypatch):
    """Split roles: fitness and the choice of the best read only the selection split (valid);
    test is read only by the final report. Baselines are measured at the start and the end."""
    import pruner_zero
    from pruner_zero import measure
    from pruner_zero.workbench import Workbench

    calls: list = []
    split_windows, grid = Workbench.split_windows, measure.grid

    def spy_windows(self, split, *a, **k):
        calls.append(split)
        return split_windows(self, split, *a, **k)

    def spy_grid(benches, metrics, tasks, seeds, split_of, *a, **k):
        calls.append(("grid", sorted({split_of(t) for t in tasks})))
        return grid(benches, metrics, tasks, seeds, split_of, *a, **k)

    monkeypatch.setattr(Workbench, "split_windows", spy_windows)
    monkeypatch.setattr(measure, "grid", spy_grid)
    out = tiny_dir / "runs" / "roles"
    pruner_zero.search(str(tiny_dir / "tiny-llama"), out, generations=1, population=4, seed=0,
                       space="small", fitness_windows=4, final_top=2, hof_size=3, confirm_seeds=2,
                       seed_metrics="wanda",
                       sparsity="0.5,0.6", data_dir=str(tiny_dir / "data"), calib_split="valid",
                       seqlen=16, nsamples=2, device="cpu", progress=False, log=lambda m: None)
    grids = [i for i, c in enumerate(calls) if isinstance(c, tuple)]
    assert [calls[i] for i in grids] == [("grid", ["valid"]), ("grid", ["test"])]
    first_test = calls.index("test")
    assert first_test > grids[1]
    assert {c for c in calls[:grids[1]] if not isinstance(c, tuple)} == {"valid"}

    rows = list(csv.DictReader(open(out / "baselines.csv", newline="")))
    seen = {(r["phase"], r["task"], r["metric"]) for r in rows}
    for phase in ("fitness", "selection", "report"):
        for task in ("tiny-llama@0.5", "tiny-llama@0.6"):
            for metric in ("magnitude", "wanda", "gblm", "pruner-zero"):
                assert (phase, task, metric) in seen, (phase, task, metric)
    assert {r["split"] for r in rows if r["phase"] == "report"} == {"test"}
    assert {r["split"] for r in rows if r["phase"] != "report"} == {"valid"}
    assert {r["seed"] for r in rows if r["phase"] == "report"} == {"0", "1"}
    hof = hall_of_fame(out)
    assert "tiny-llama@0.6:/gblm" in hof[0] and hof[0]["tiny-llama@0.6:/gblm"]
    text = (out / BEST_TXT).read_text()
    assert "report split" in text and "gblm" in text and " ± " in text
    # the fitness of wanda, the reference, on its own windows is exactly 1 on every task
    evals = [json.loads(l) for l in (out / EVALUATIONS).read_text().splitlines()]
    wanda = [e for e in evals if e["formula"] == "mul(W, sqrt(X))"]
    assert wanda and all(e["fitness"] == 1.0 for e in wanda)
    assert all(t["ratio"] == 1.0 for t in wanda[0]["tasks"].values())
    ok = [e for e in evals if e["status"] == "ok"]
    assert ok and all(set(e["tasks"]) == {"tiny-llama@0.5", "tiny-llama@0.6"} for e in ok)
    # fitness = the geometric mean of the per-task ratios to wanda's ppl on the same windows
    refs = {r["task"]: float(r["ppl"]) for r in rows if r["phase"] == "fitness" and r["metric"] == "wanda"}
    for e in ok:
        ratios = [t["ppl"] / refs[name] for name, t in e["tasks"].items()]
        assert e["fitness"] == pytest.approx(math.sqrt(ratios[0] * ratios[1]), rel=1e-12)


# ------------------------------------------------------------------ hardening (issue 12)

def quick_search(tiny_dir: Path, out: Path, generations: int = 1) -> list[str]:
    return ["search", *protocol(tiny_dir), "--space", "small", "--population", "4",
            "--generations", str(generations), "--gp-seed", "3", "--fitness-windows", "4",
            "--hof-size", "3", "--final-top", "1", "--polish", "0", "--confirm-seeds", "1",
            "--baselines", "wanda", "--out", str(out)]


def test_two_searches_on_one_out_directory_exactly_one_runs(tiny_dir):
    out = tiny_dir / "runs" / "shared"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "pruner_zero", *quick_search(tiny_dir, out, generations=2)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    refused = next(err for p, (_, err) in zip(procs, results) if p.returncode == 2)
    assert ("in use by another pruner-zero search" in refused
            or "already holds a search run" in refused), refused
    alone = tiny_dir / "runs" / "alone"
    assert main(quick_search(tiny_dir, alone, generations=2)) == 0
    assert _records(out) == _records(alone)
    assert hall_of_fame(out) == hall_of_fame(alone)


def _records(run: Path) -> list[dict]:
    """evaluations.jsonl, timings aside."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run / EVALUATIONS).read_text().splitlines()]


def _unfinished_after_generation_0(tiny_dir: Path, out: Path) -> None:
    """A run whose checkpoint holds generation 0 of 1: a resume has a whole generation to add."""
    assert main(quick_search(tiny_dir, out, generations=0)) == 0
    config = json.loads((out / CONFIG).read_text())
    config["gp"]["generations"] = 1
    (out / CONFIG).write_text(json.dumps(config))
    state = checkpoint(out)
    state["finished"] = False
    del state["final"]
    (out / CHECKPOINT).write_text(json.dumps(state))


def test_a_run_held_by_another_process_is_refused_and_left_alone(tiny_dir, capsys):
    from pruner_zero.files import RunLock

    out = tiny_dir / "runs" / "held"
    _unfinished_after_generation_0(tiny_dir, out)
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    with RunLock(out, "search"):  # as a running search holds it
        code = main(["search", "--resume", str(out), "--quiet"])
        err = capsys.readouterr().err
    assert code == 2 and "in use by another pruner-zero search" in err and f"pid {os.getpid()}" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert main(["search", "--resume", str(out), "--quiet"]) == 0  # released: it resumes


def test_two_resumes_of_one_run_write_each_evaluation_once(tiny_dir):
    import shutil

    out, alone = tiny_dir / "runs" / "twice", tiny_dir / "runs" / "once"
    _unfinished_after_generation_0(tiny_dir, out)
    shutil.copytree(out, alone)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "pruner_zero", "search", "--resume", str(out), "--quiet"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert 0 in [p.returncode for p in procs], results
    for p, (_, err) in zip(procs, results):  # the other was refused, or came after the end
        assert p.returncode == 0 or "in use by another pruner-zero search" in err, err
    assert main(["search", "--resume", str(alone), "--quiet"]) == 0
    assert _records(out) == _records(alone)  # generation 1 once, as one resume alone writes it


def _drop_population(state: dict) -> None:
    del state["population"]


def _wrong_generation(state: dict) -> None:
    state["generation"] = "one"


def _bad_formula(state: dict) -> None:
    state["hall_of_fame"][0]["formula"] = "mul(W,"


@pytest.mark.parametrize("damage, message", [
    (_drop_population, "missing 'population'"),
    (_wrong_generation, "'generation' has the wrong type"),
    (_bad_formula, "cannot parse metric formula"),
    ("directory", "checkpoint.json is not a file"),
    ("truncated", "is not valid JSON"),
])
def test_a_damaged_checkpoint_is_one_line_and_changes_nothing(tiny_dir, capsys, damage, message):
    out = tiny_dir / "runs" / "damaged"
    assert main(quick_search(tiny_dir, out)) == 0
    state = checkpoint(out)
    state["finished"] = False  # as if killed before the final confirmation
    ck = out / CHECKPOINT
    if damage == "directory":
        ck.unlink()
        ck.mkdir()
    elif damage == "truncated":
        ck.write_text(json.dumps(state)[:200])
    else:
        damage(state)
        ck.write_text(json.dumps(state))
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = main(["search", "--resume", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()  # refused before any model work or log line
    assert line.startswith("error:") and message in line and "checkpoint" in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def _edit_config(key: str, value) -> callable:
    def edit(config: dict) -> None:
        where = config
        *path, last = key.split(".")
        for k in path:
            where = where[k] if not isinstance(where, list) else where[int(k)]
        if value is _DELETE:
            del where[last]
        else:
            where[last] = value
    return edit


_DELETE = object()


@pytest.mark.parametrize("key, value, message", [
    ("gp.extra", 1, "unexpected keyword"),
    ("gp", [], "'gp' must be a mapping"),
    ("runtime", _DELETE, "'runtime' must be a mapping"),
    ("space", {}, "'space.definition' must be a mapping"),
    ("tasks.0.nsamples", "4", "nsamples must be an integer"),
    ("tasks", [], "'tasks' must be a list"),
    ("tasks.0.weight", 0, "weight must be a positive number"),
    ("fitness.fitness_windows", -5, "fitness_windows"),
    ("final_top", "x", "'final_top'"),
    ("confirm_seeds", 0, "'confirm_seeds' must be an integer from 1 to 100"),
    ("cache_dir", 5, "'cache_dir'"),
    ("gp.tournament", 99999999999999999999, "--tournament must be between 1 and the population"),
])
def test_a_damaged_config_is_refused_before_any_work(tiny_dir, capsys, key, value, message):
    out = tiny_dir / "runs" / "cfg"
    _unfinished_after_generation_0(tiny_dir, out)
    config = json.loads((out / CONFIG).read_text())
    _edit_config(key, value)(config)
    (out / CONFIG).write_text(json.dumps(config))
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = main(["search", "--resume", str(out), "--quiet"])
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert code == 2 and "config.json is damaged" in line and message in line, line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_search_limits_that_would_stall_are_checked_before_the_model_loads(tmp_path, capsys):
    missing = str(tmp_path / "no-such-model")
    for extra, message in ((["--tournament", "99999999999999999999"], "--tournament must be between"),
                           (["--confirm-seeds", "99999999999999999999"], "--confirm-seeds must be an integer from 1 to 100"),
                           (["--seed-metrics", "add(" * 10 + "W" + ", W)" * 10], "exceeds the search space")):
        code = main(["search", "--model", missing, "--out", str(tmp_path / "r"), "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "model path not found" not in err, err


def test_an_output_name_taken_by_a_directory_is_refused_before_the_search(tiny_dir, capsys):
    out = tiny_dir / "runs" / "taken"
    (out / "hall_of_fame.csv").mkdir(parents=True)
    code = main(quick_search(tiny_dir, out))
    err = capsys.readouterr().err
    assert code == 2 and "hall_of_fame.csv is not a file" in err and "reference" not in err


def test_python_api_arguments_of_the_wrong_type_are_config_errors(tmp_path):
    from pruner_zero import search
    from pruner_zero.compare import compare
    from pruner_zero.errors import ConfigError
    from pruner_zero.tasks import Task

    for kwargs, message in (({"model": 5, "out": str(tmp_path / "r")}, "model must be"),
                            ({"model": "m", "out": 5}, "out must be a directory path"),
                            ({"tasks": {"model": "m"}, "out": str(tmp_path / "r")}, "tasks must be"),
                            ({"model": "m", "out": str(tmp_path / "r"), "baselines": 5}, "baselines must be")):
        with pytest.raises(ConfigError, match=message):
            search(**kwargs)
    with pytest.raises(ConfigError, match="tasks must be a list of Task"):
        compare("wanda", ["m"])
    for bad, message in (({"seed": "0"}, "seed must be an integer"),
                         ({"sparsity": "0.5"}, "sparsity must be a number")):
        with pytest.raises(ConfigError, match=message):
            Task(model="m", **bad)


def test_the_python_api_refuses_options_a_resume_would_ignore(tiny_dir, capsys):
    """The CLI's rule for --resume holds for search(resume=True): nothing given is silently
    dropped; where and how to run (progress, log) may still be passed."""
    from pruner_zero import search
    from pruner_zero.errors import ConfigError

    out = tiny_dir / "run"
    assert main(["search", *protocol(tiny_dir), "--space", "small", "--generations", "0",
                 "--population", "4", "--final-top", "1", "--confirm-seeds", "1", "--baselines",
                 "", "--out", str(out)]) == 0
    capsys.readouterr()
    for kwargs, named in (({"generations": 30}, "generations"), ({"data_dir": "elsewhere"}, "data_dir"),
                          ({"model": "other/model"}, "model"),
                          ({"baselines": "wanda", "seed": 3}, "baselines, seed")):
        with pytest.raises(ConfigError, match=f"drop {named} "):
            search(out=out, resume=True, **kwargs)
    entries = search(out=out, resume=True, progress=False, log=lambda *_: None)
    assert entries and entries[0].formula
