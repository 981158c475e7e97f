"""search/rundir.py: the run directory refuses mixing runs, one process at a time works in it
(the lock), a damaged checkpoint or output name is one error line that changes nothing, a
checkpoint keeps its infinities, and the best entry of a hall of fame."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (REPO, checkpoint, hall_of_fame, quick_search, run_main, strict_loads,
                      unfinished_after_generation_0)

from pruner_zero.cli import main
from pruner_zero.search.rundir import CHECKPOINT, CONFIG, EVALUATIONS


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


def test_a_run_held_by_another_process_is_refused_and_left_alone(tiny_dir, capsys):
    from pruner_zero.files import RunLock

    out = tiny_dir / "runs" / "held"
    unfinished_after_generation_0(tiny_dir, out)
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
    unfinished_after_generation_0(tiny_dir, out)
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


def test_an_output_name_taken_by_a_directory_is_refused_before_the_search(tiny_dir, capsys):
    out = tiny_dir / "runs" / "taken"
    (out / "hall_of_fame.csv").mkdir(parents=True)
    code = main(quick_search(tiny_dir, out))
    err = capsys.readouterr().err
    assert code == 2 and "hall_of_fame.csv is not a file" in err and "reference" not in err


def test_resume_of_something_that_is_not_a_directory_names_resume(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    code, out, err = run_main(capsys, "search", "--resume", str(afile), "--quiet")
    assert code == 2 and err.startswith("error: --resume") and "--out" not in err.split(":")[1]


def test_a_checkpoint_with_infinities_resumes_with_them(tmp_path):
    """Strict JSON writes inf as null; the checkpoint reads back exactly what was saved, so a
    resumed run goes on as the uninterrupted one (an unevaluated individual stays unevaluated)."""
    from pruner_zero.files import dumps_json
    from pruner_zero.search.layout import CHECKPOINT_VERSION
    from pruner_zero.search.results import FinalResults
    from pruner_zero.search.rundir import CHECKPOINT, RunDir

    inf = float("inf")
    stored = {"fitness": inf, "status": "stopped_early", "reason": "stopped", "fingerprint": "f",
              "windows": 16, "partial": inf, "trace": [[16, inf]]}
    state = {
        "generation": 1, "evaluations_lines": 3, "finished": True, "random_state": [3, [1, 2], None],
        "population": [{"formula": "W", "fitness": inf, "status": "invalid", "key": None,
                        "fingerprint": None},
                       {"formula": "X", "fitness": None, "status": None, "key": None,
                        "fingerprint": None}],
        "hall_of_fame": [{"formula": "W", "fitness": 1.25, "status": "ok", "key": "W",
                          "fingerprint": "a"}],
        "evaluator": {"tasks": {"t": {"by_key": {"k": stored}, "by_fingerprint": {"f": stored},
                                      "counts": {"evaluated": 1}}},
                      "start_rows": [{"metric": "wanda", "task": "t", "seed": 0, "ppl": inf}]},
        "history": [{"generation": 0, "best": inf, "median": inf}],
        "final": {"selection_rows": [{"metric": "W", "task": "t", "seed": 0, "ppl": inf}],
                  "report_rows": [{"metric": "W", "task": "t", "seed": 0, "ppl": inf}],
                  "baselines_fitness": [{"metric": "wanda", "task": "t", "seed": 0, "ppl": inf}],
                  "selection": {"W": {"score": inf, "std": inf, "scores": [inf, 2.0]}},
                  "top": ["W"], "baseline_names": []},
    }
    run = RunDir(tmp_path)
    (tmp_path / CHECKPOINT).write_text(dumps_json({"version": CHECKPOINT_VERSION, **state}))
    text = (tmp_path / CHECKPOINT).read_text()
    assert "Infinity" not in text and strict_loads(text)["population"][0]["fitness"] is None
    loaded = run.load_checkpoint()
    for key in ("population", "hall_of_fame", "evaluator", "history", "random_state"):
        assert getattr(loaded, key) == state[key], key
    assert loaded.final == FinalResults.from_dict(state["final"])
    assert loaded.final.selection["W"].scores == [inf, 2.0]
    assert loaded.final.report_rows[0].ppl == inf and loaded.final.baselines_fitness[0].ppl == inf
    run.save_checkpoint(loaded)  # and what is saved again reads back the same
    assert run.load_checkpoint() == loaded


def test_the_best_metric_is_the_lowest_mean_selection_score_of_those_re_measured():
    from pruner_zero.search.rundir import HallOfFameEntry, best_entry

    def entry(rank, score, chosen=False):
        return HallOfFameEntry(rank=rank, formula=f"m{rank}", fitness=100.0 + rank, score=score,
                               score_std=0.0, size=1, height=0, chosen=chosen)

    # the run's own choice (made over calibration seeds) wins over a recomputation
    assert best_entry([entry(1, 0.9), entry(2, 1.0, chosen=True)]).rank == 2

    assert best_entry([entry(1, 120.0), entry(2, 119.0), entry(3, None)]).rank == 2
    assert best_entry([entry(1, 120.0), entry(2, 120.0)]).rank == 1  # a tie keeps the better fitness
    assert best_entry([entry(1, None), entry(2, None)]).rank == 1  # nothing re-measured: rank 1
    assert best_entry([entry(1, float("inf")), entry(2, 130.0)]).rank == 2


def test_damage_inside_a_checkpoints_caches_or_final_is_an_error_not_a_traceback(tmp_path):
    """Review: a list where the evaluator's cache is a mapping, or a number for the final
    baselines' rows, raised AttributeError / TypeError while the checkpoint was read."""
    from pruner_zero.errors import ConfigError
    from pruner_zero.search.checkpoint import Checkpoint
    from pruner_zero.search.layout import CHECKPOINT_VERSION

    state = {"version": CHECKPOINT_VERSION, "generation": 0, "evaluations_lines": 0,
             "population": [], "hall_of_fame": [], "random_state": [3, [1, 2], None],
             "history": [], "evaluator": {"tasks": {"t": {"by_key": ["not", "a", "mapping"]}}}}
    loaded = Checkpoint.from_dict(state, tmp_path / CHECKPOINT)  # restoring it refuses it
    assert loaded.evaluator["tasks"]["t"]["by_key"] == ["not", "a", "mapping"]
    final = {"selection_rows": [], "report_rows": [], "selection": {}, "top": [],
             "baseline_names": [], "baselines_fitness": 7}
    with pytest.raises(ConfigError, match="baselines_fitness"):
        Checkpoint.from_dict({**state, "evaluator": {}, "finished": True, "final": final},
                             tmp_path / CHECKPOINT)
