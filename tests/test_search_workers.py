"""search --workers: candidates measured on Ray actors give the run that evaluating them here
gives (any number of workers, an actor killed mid-generation, the driver killed and resumed);
without Ray, --workers is one clear error and nothing else changes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_mid_generation

from pruner_zero.cli import main
from pruner_zero.search.rundir import CHECKPOINT, EVALUATIONS, HALL_OF_FAME

REPO = Path(__file__).resolve().parents[1]


def args(tiny_dir: Path, out: Path, *extra: str, generations: int = 2) -> list[str]:
    return ["search", "--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--seqlen", "16", "--nsamples", "2", "--calib-split", "train", "--device", "cpu",
            "--cache-dir", str(tiny_dir / "stats-cache"), "--quiet", "--space", "small",
            "--population", "6", "--generations", str(generations), "--gp-seed", "5",
            "--fitness-windows", "0", "--hof-size", "4", "--final-top", "1", "--confirm-seeds", "1",
            "--baselines", "wanda", "--seed-metrics", "wanda", "--sparsity", "0.5,0.6",
            "--out", str(out), *extra]


def evaluations(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out / EVALUATIONS).read_text().splitlines()]


def outcome(out: Path) -> tuple:
    state = json.loads((out / CHECKPOINT).read_text())
    return (evaluations(out), (out / HALL_OF_FAME).read_text(), state["hall_of_fame"],
            state["final"]["report_rows"])


@pytest.fixture
def ray_installed():
    pytest.importorskip("ray", reason="the ray extra is not installed")


@pytest.mark.slow
def test_workers_give_the_run_evaluating_here_gives_even_when_one_dies(tiny_dir, capsys,
                                                                      monkeypatch, ray_installed):
    from pruner_zero.search.workers import WorkerPool

    here = tiny_dir / "runs" / "here"
    assert main(args(tiny_dir, here)) == 0
    pools = []
    original = WorkerPool.__init__

    def spied(self, *a, **k):
        original(self, *a, **k)
        pools.append(self)
        killed = []

        def kill_first_actor(pool):  # after the first result, SIGKILL one actor's process
            if not killed and len(pools) == 2:
                killed.append(pool.pids()[0])
                os.kill(killed[0], signal.SIGKILL)
        self.after_result.append(kill_first_actor)

    monkeypatch.setattr(WorkerPool, "__init__", spied)
    one, two = tiny_dir / "runs" / "one", tiny_dir / "runs" / "two"
    assert main(args(tiny_dir, one, "--workers", "1", "--worker-cpus", "1")) == 0
    assert main(args(tiny_dir, two, "--workers", "2", "--worker-cpus", "1")) == 0
    capsys.readouterr()
    assert pools[0].replaced == 0 and pools[1].replaced >= 1  # one actor of the second died
    assert pools[0].actors == [] and pools[1].actors == []  # closed at the end
    assert outcome(one) == outcome(here) == outcome(two)
    assert len(evaluations(two)) > 6  # generations 1 and 2 were measured by the pool


@pytest.mark.slow
def test_driver_killed_mid_search_resumes_with_workers_to_the_same_end(tiny_dir, capsys,
                                                                      ray_installed):
    ref, killed = tiny_dir / "runs" / "ref", tiny_dir / "runs" / "killed"
    assert main(args(tiny_dir, ref, generations=3)) == 0
    capsys.readouterr()

    def generation_1_checkpointed() -> bool:  # inside the pool's part of the run
        path = killed / CHECKPOINT
        try:
            return path.is_file() and json.loads(path.read_text())["generation"] >= 1
        except (ValueError, KeyError):
            return False

    kill_mid_generation(args(tiny_dir, killed, "--workers", "2", "--worker-cpus", "1", generations=3),
                        generation_1_checkpointed, timeout=300, pause=0.01,
                        group=True)  # the driver and its Ray processes
    state = json.loads((killed / CHECKPOINT).read_text())
    assert not state["finished"] and state["generation"] < 3
    assert main(["search", "--resume", str(killed), "--workers", "2", "--worker-cpus", "1",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert outcome(killed) == outcome(ref)


@pytest.mark.slow
def test_a_killed_search_leaves_no_ray_process_behind(tiny_dir, ray_installed):
    """Issue #22: SIGKILL of the search alone (not its process group) left Ray's dashboard
    and runtime-env agents running, reparented to init, for about a minute. Its watcher kills
    every process the search started, as soon as the search is gone."""
    import time

    from pruner_zero.search.reaper import _stat, descendants

    out = tiny_dir / "runs" / "killed-alone"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "pruner_zero",
                             *args(tiny_dir, out, "--workers", "1", "--worker-cpus", "1",
                                   generations=50)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    ours: dict[int, int] = {}
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and not (out / CHECKPOINT).is_file():
            time.sleep(0.2)
        ours = descendants(proc.pid)  # Ray's processes and the watcher, while the search runs
        assert any("ray" in (Path("/proc") / str(p) / "cmdline").read_bytes().decode(errors="replace")
                   for p in ours if _stat(p)), "no Ray process was started"
    finally:
        proc.kill()
        proc.wait()
    deadline = time.time() + 20  # Ray's own agents linger ~55 s after their raylet dies
    left = ours
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = {p: t for p, t in ours.items() if (_stat(p) or (0, None))[1] == t}
    for pid in left:  # leave nothing behind for the next test either
        os.kill(pid, signal.SIGKILL)
    assert left == {}


def test_without_ray_workers_are_one_clear_error_and_nothing_else_changes(tiny_dir, capsys,
                                                                        monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    monkeypatch.setitem(sys.modules, "ray", None)  # importing it would fail
    out = tiny_dir / "runs" / "noray"
    assert main(args(tiny_dir, out, "--workers", "2")) == 2
    err = capsys.readouterr().err
    assert "not installed" in err and "pruner-zero[ray]" in err and "--workers" in err
    assert not out.exists()  # refused before any work
    assert main(args(tiny_dir, out, generations=1)) == 0  # without --workers: a normal run
    assert (out / HALL_OF_FAME).is_file()


def test_importing_the_package_never_imports_ray():
    code = ("import sys, pruner_zero, pruner_zero.cli, pruner_zero.search.api, "
            "pruner_zero.search.workers, pruner_zero.search.fitness; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("requested, device, device_map, cluster, workers, expected", [
    (None, "cpu", None, 8, 2, 0.0),          # a CPU run takes no GPU
    (None, "cuda", None, 0, 2, 0.0),         # nor a cluster without one
    (None, "cuda", None, 8, 2, 1.0),         # one each
    (None, "auto", "auto", 8, 2, 4.0),       # a model spread over its worker's share
    (None, "cuda", "auto", 8, 3, 2.0),
    (None, "cuda", "auto", 2, 4, 1.0),       # at least one: the pool then says it does not fit
    (0.5, "cuda", None, 8, 2, 0.5),          # --worker-gpus wins
    (2, "auto", "auto", 8, 2, 2.0),
])
def test_gpus_per_worker(requested, device, device_map, cluster, workers, expected):
    from pruner_zero.search.workers import gpus_per_worker

    assert gpus_per_worker(requested, device, device_map, cluster, workers) == expected


def test_worker_gpus_on_a_cpu_run_is_refused(tiny_dir, tmp_path, capsys):
    from pruner_zero.errors import ConfigError
    from pruner_zero.search.workers import gpus_per_worker

    with pytest.raises(ConfigError, match="CPU run uses no GPU"):
        gpus_per_worker(1.0, "cpu", None, 8, 2)
    # the CLI says so before any work (the tiny run is on --device cpu)
    assert main(args(tiny_dir, tmp_path / "run", "--workers", "1", "--worker-gpus", "1")) == 2
    assert "a CPU run uses no GPU" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_worker_gpus_must_be_positive(tiny_dir, tmp_path, capsys, value):
    assert main(args(tiny_dir, tmp_path / "run", "--workers", "1", "--worker-gpus", value)) == 2
    err = capsys.readouterr().err
    assert "--worker-gpus" in err and not (tmp_path / "run").exists()



def test_a_ticket_gathered_twice_or_never_submitted_is_an_error_not_a_wait():
    from pruner_zero.search.workers import WorkerPool

    pool = object.__new__(WorkerPool)  # the bookkeeping alone, no actors
    pool._jobs, pool._results, pool._discarded = {1: (0, "W", None)}, {2: "r"}, {3}
    pool._running, pool._queue, pool.progress = {}, [], False
    for tickets in ([7], [2, 2], [3]):
        with pytest.raises(ValueError, match="gathered twice or never submitted"):
            pool.gather(tickets)
    assert pool.gather([2]) == ["r"]
    with pytest.raises(RuntimeError, match="nothing runs or waits"):
        pool.gather([1])  # submitted, but neither queued nor running: lost, said so


def test_the_watcher_is_handed_ray_processes_only_never_the_callers_children():
    """A program that calls search keeps its own children: the watcher is handed only the
    processes started after it whose command line names Ray."""
    import time

    from pruner_zero.search.reaper import PROC, Reaper

    if not PROC.is_dir():
        pytest.skip("the watcher reads /proc (Linux only)")
    mine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        reaper = Reaper.start()
        later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        reaper.watch_children()  # neither is Ray's
        reaper.close()
        time.sleep(0.5)
        assert mine.poll() is None and later.poll() is None
    finally:
        for p in (mine, locals().get("later")):
            if p is not None:
                p.kill()
                p.wait()
