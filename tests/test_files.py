"""files.py: atomic writes under unique names, bounded JSON reads, output checks, the run lock."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import strict_loads

from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.files import (RunLock, atomic_write_text, check_writable_dir, check_writable_file,
                               json_depth, publish_dir, read_json, remove_stale_partials, temp_path)


def test_temporary_names_are_unique_per_writer(tmp_path):
    target = tmp_path / "stats.safetensors"
    names = {temp_path(target) for _ in range(200)}
    assert len(names) == 200
    assert all(n.parent == tmp_path and n.name.startswith(".stats.safetensors.") for n in names)


def test_concurrent_writers_of_one_file_never_mix(tmp_path):
    """Each thread writes a whole, distinct payload; the file ends as one of them, intact."""
    target = tmp_path / "out.json"
    payloads = [json.dumps({"writer": i, "pad": "x" * 20000}) for i in range(8)]
    threads = [threading.Thread(target=lambda p=p: [atomic_write_text(target, p) for _ in range(20)])
               for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_text() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_json_depth_ignores_brackets_inside_strings():
    assert json_depth('{"a": "[[[{{{", "b": [1, [2]]}') == 3
    assert json_depth('"\\"[["') == 0


def test_deep_json_is_refused_by_name_without_recursion(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 50000 + "]" * 50000)
    with pytest.raises(MetricError, match="nested 50000 levels deep; the limit is 10"):
        read_json(path, "metric file", MetricError, max_depth=10)


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text('{"data": ' + "9" * 5000 + "}"), "not valid JSON"),  # int too long
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_bytes(b"\xff\xfe{}"), "not UTF-8"),
    (lambda p: p.write_text("{oops"), "not valid JSON"),
    (lambda p: None, "does not exist"),
])
def test_read_json_names_the_file_and_the_problem(tmp_path, make, message):
    path = tmp_path / "checkpoint.json"
    make(path)
    with pytest.raises(ConfigError, match=message) as info:
        read_json(path, "checkpoint")
    assert str(path) in str(info.value)


def test_output_paths_under_a_file_are_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="--report directory .* cannot be written"):
        check_writable_file(blocker / "sub" / "report.json", "--report")
    with pytest.raises(ConfigError, match="--cache-dir .* exists and is not a directory"):
        check_writable_dir(blocker, "--cache-dir")
    assert check_writable_dir(tmp_path / "new" / "dir", "--out").is_dir()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="cannot be written"):
            check_writable_dir(ro / "x", "--save")
    finally:
        ro.chmod(0o700)


def test_publish_dir_leaves_nothing_that_looks_complete_when_the_writer_fails(tmp_path):
    dest = tmp_path / "model"

    def half(tmp: Path) -> None:
        (tmp / "model.safetensors").write_text("weights")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError):
        publish_dir(half, dest)
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    publish_dir(lambda tmp: (tmp / "config.json").write_text("{}"), dest)
    assert [p.name for p in dest.iterdir()] == ["config.json"]


def test_partial_directories_of_dead_processes_are_removed(tmp_path):
    dest = tmp_path / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".model.{dead}.deadbeef.partial"
    alive = tmp_path / f".model.{os.getpid()}.cafecafe.partial"
    stale.mkdir()
    alive.mkdir()
    assert remove_stale_partials(dest) == [stale]
    assert alive.exists() and not stale.exists()


def test_a_second_holder_of_the_lock_is_refused_and_a_dead_holders_lock_is_taken(tmp_path):
    with RunLock(tmp_path, "search"):
        code = ("import sys; sys.path.insert(0, %r)\n"
                "from pruner_zero.files import RunLock\n"
                "from pruner_zero.errors import ConfigError\n"
                "try:\n    RunLock(%r).acquire()\nexcept ConfigError as e:\n    print(e)\n"
                % (str(Path(__file__).resolve().parents[1]), str(tmp_path)))
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert "in use by another pruner-zero" in other.stdout and f"pid {os.getpid()}" in other.stdout
    # a holder killed with SIGKILL: the kernel drops its lock, the next process takes it
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; sys.path.insert(0, %r)\n"
                               "from pruner_zero.files import RunLock\n"
                               "lock = RunLock(%r).acquire(); print('held', flush=True); time.sleep(60)"
                               % (str(Path(__file__).resolve().parents[1]), str(tmp_path))],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait()
    RunLock(tmp_path).acquire().release()


def test_another_outputs_live_temporary_is_never_taken_for_a_stale_one(tmp_path):
    """`.out.99999.<live pid>...` belongs to `out.99999`: a save to `out` leaves it alone."""
    live = tmp_path / f".out.99999.{os.getpid()}.abcd1234.partial"
    live.mkdir()
    assert remove_stale_partials(tmp_path / "out") == []
    assert live.exists()


def test_written_json_is_strict_non_finite_numbers_become_null(tmp_path):
    from pruner_zero.files import atomic_write_json, dumps_json

    obj = {"ppl": float("inf"), "nan": float("nan"), "rows": [1.5, -float("inf"), (2, float("nan"))],
           "ok": 3, "flag": True}
    atomic_write_json(tmp_path / "r.json", obj)
    assert strict_loads((tmp_path / "r.json").read_text()) == {
        "ppl": None, "nan": None, "rows": [1.5, None, [2, None]], "ok": 3, "flag": True}
    assert strict_loads(dumps_json(obj)) == strict_loads((tmp_path / "r.json").read_text())
