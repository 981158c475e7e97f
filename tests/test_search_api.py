"""search/api.py: a real search on a tiny random LLaMA, through the CLI and search():
SIGKILL mid-generation + --resume ends exactly like an uninterrupted run, the best metric prunes
to the reported ppl, caches and racing leave the hall of fame alone, and split roles hold."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from conftest import (base_args, checkpoint, hall_of_fame, kill_mid_generation, protocol, run_main,
                      strict_loads, write_tasks_yaml)

from pruner_zero.cli import main
from pruner_zero.errors import ConfigError
from pruner_zero.search.rundir import BEST_JSON, BEST_TXT, CHECKPOINT, CONFIG, EVALUATIONS, HALL_OF_FAME

GENERATIONS = 3


def search_args(tiny_dir: Path, out: Path) -> list[str]:
    # no evaluator caches and all windows: every candidate costs real forward passes, so a
    # generation lasts long enough to be killed in the middle of it
    return ["search", *protocol(tiny_dir), "--space", "small", "--population", "10",
            "--generations", str(GENERATIONS), "--gp-seed", "7", "--fitness-windows", "0",
            "--cx-prob", "0.9", "--mut-prob", "0.5", "--hof-size", "5", "--final-top", "2",
            "--seed-metrics", "wanda", "--no-canonical-cache", "--no-fingerprint-cache",
            "--confirm-seeds", "2", "--sparsity", "0.5,0.6", "--out", str(out)]  # two tasks


def test_killed_and_resumed_search_ends_like_an_uninterrupted_one(tiny_dir, capsys):
    ref, killed = tiny_dir / "runs" / "ref", tiny_dir / "runs" / "killed"

    assert main(search_args(tiny_dir, ref)) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["hall_of_fame"] == 5 and summary["best"] is not None
    for name in (CONFIG, CHECKPOINT, EVALUATIONS, HALL_OF_FAME, BEST_JSON, BEST_TXT):
        assert (ref / name).is_file(), name

    log = killed / EVALUATIONS
    kill_mid_generation(search_args(tiny_dir, killed),  # once generation 1 has started, not ended
                        lambda: log.is_file() and '"generation": 1,' in log.read_text())
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
    from pruner_zero.search import api
    from pruner_zero.workbench import Workbench

    calls: list = []
    split_windows, grid = Workbench.split_windows, api.grid

    def spy_windows(self, split, *a, **k):
        calls.append(split)
        return split_windows(self, split, *a, **k)

    def spy_grid(benches, metrics, tasks, seeds, split_of, *a, **k):
        calls.append(("grid", sorted({split_of(t) for t in tasks})))
        return grid(benches, metrics, tasks, seeds, split_of, *a, **k)

    monkeypatch.setattr(Workbench, "split_windows", spy_windows)
    monkeypatch.setattr(api, "grid", spy_grid)
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


def test_search_that_fails_its_checks_leaves_no_run_behind(tiny_dir, capsys):
    out_dir = tiny_dir / "runs" / "bad"
    code, out, err = run_main(capsys, "search", *base_args(tiny_dir), "--structure", "2:3",
                         "--out", str(out_dir), "--population", "4", "--generations", "1")
    assert code == 2 and "divisible by 3" in err
    assert not (out_dir / "config.json").exists()


def test_tasks_file_refuses_several_models_or_sparsities_from_the_command_line(tmp_path):
    from pruner_zero.tasks import build_tasks

    path = write_tasks_yaml(tmp_path, "- model: X\n")
    with pytest.raises(ConfigError, match="list the models in the tasks file"):
        build_tasks(["A", "B"], None, str(path))
    with pytest.raises(ConfigError, match="one default value"):
        build_tasks(None, "0.6,0.7", str(path))


def test_the_tail_measures_its_window_budgets_and_says_so(tiny_dir):
    """--confirm-windows and --eval-windows bound the confirmation and the report: every row
    of the tail rests on that many windows spread over its split, and the files say how many."""
    import pruner_zero
    from pruner_zero.data import eval_windows, tokenize
    from pruner_zero.workbench import Protocol, Workbench

    out = tiny_dir / "runs" / "budgets"
    pruner_zero.search(str(tiny_dir / "tiny-llama"), out, generations=1, population=4, seed=0,
                       space="small", fitness_windows=4, final_top=1, hof_size=2, confirm_seeds=1,
                       confirm_windows=2, eval_windows=3, baselines="wanda", sparsity="0.5",
                       data_dir=str(tiny_dir / "data"), calib_split="train", seqlen=16,
                       nsamples=2, device="cpu", progress=False, log=lambda m: None)
    rows = list(csv.DictReader(open(out / "baselines.csv", newline="")))
    assert {r["windows"] for r in rows if r["phase"] == "selection"} == {"2"}
    assert {r["windows"] for r in rows if r["phase"] == "report"} == {"3"}
    text = (out / BEST_TXT).read_text()
    assert "on 2 windows spread evenly over the selection split" in text
    assert "test, 3 windows, 1 seeds]" in text
    # wanda's report number is the perplexity of those 3 spread windows
    bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                               calib_split="train", nsamples=2, seqlen=16, device="cpu"),
                      progress=False, log=lambda m: None)
    from pruner_zero.engine import Engine
    from pruner_zero.masks import parse_structure
    from pruner_zero.metric.io import resolve_metric

    _, tree = resolve_metric("wanda")
    Engine(bench.model, bench.linears, bench.stats, parse_structure("unstructured", 0.5, "row"),
           "dense", keep=None).prune(tree, "wanda")
    windows = eval_windows(tokenize(bench.tokenizer, (tiny_dir / "data" / "test.txt").read_text()),
                           16, 3, spread=True)
    wanda = [float(r["ppl"]) for r in rows if r["phase"] == "report" and r["metric"] == "wanda"]
    assert wanda == [pytest.approx(bench.perplexity(windows), rel=1e-6)]


def test_a_search_by_the_worst_task_ranks_and_chooses_by_the_largest_ratio(tiny_dir, capsys):
    """--task-combine worst: every fitness is the worst task's ppl / reference ppl, the best is
    chosen by the worst task's ratio per seed, the run says so, a resume may not change it."""
    out = tiny_dir / "runs" / "worst"
    code, _, err = run_main(capsys, "search", *protocol(tiny_dir), "--space", "small",
                            "--population", "4", "--generations", "1", "--gp-seed", "3",
                            "--fitness-windows", "4", "--hof-size", "3", "--final-top", "2",
                            "--polish", "0", "--confirm-seeds", "2", "--baselines", "gblm",
                            "--sparsity", "0.5,0.6", "--task-combine", "worst", "--out", str(out))
    assert code == 0, err
    assert json.loads((out / CONFIG).read_text())["fitness"]["task_combine"] == "worst"
    rows = list(csv.DictReader(open(out / "baselines.csv", newline="")))
    refs = {r["task"]: float(r["ppl"]) for r in rows if r["phase"] == "fitness" and r["metric"] == "wanda"}
    evals = [json.loads(l) for l in (out / EVALUATIONS).read_text().splitlines()]
    ok = [e for e in evals if e["status"] == "ok"]
    assert ok and all(e["fitness"] == max(t["ppl"] / refs[n] for n, t in e["tasks"].items())
                      for e in ok)
    sel = {(r["task"], r["metric"], r["seed"]): float(r["ppl"]) for r in rows
           if r["phase"] == "selection"}
    final = checkpoint(out)["final"]
    gblm = [max(sel[(t, "gblm", s)] / sel[(t, "wanda", s)] for t in refs) for s in ("0", "1")]
    assert final["selection"]["gblm"]["scores"] == pytest.approx(gblm, rel=1e-12)
    text = (out / BEST_TXT).read_text()
    assert "the worst task's ppl / ppl(wanda)" in text
    selection_line = next(line for line in text.splitlines() if line.startswith("selection:"))
    assert "the worst task's ppl / ppl(wanda)" in selection_line  # as the score was combined
    assert "geometric" not in selection_line
    from pruner_zero.search.config import SearchConfig
    from pruner_zero.search.stored import check_resume
    with pytest.raises(ConfigError, match="task_combine"):  # a resume may not change it
        check_resume(SearchConfig(out=out, resume=True, task_combine="worst"))


def test_task_weights_do_not_apply_to_the_worst_task(tiny_dir, tmp_path, capsys):
    tasks = write_tasks_yaml(tmp_path, f"- model: {tiny_dir / 'tiny-llama'}\n  sparsity: 0.5\n"
                                       f"- model: {tiny_dir / 'tiny-llama'}\n  sparsity: 0.6\n"
                                       "  weight: 3\n")
    code, _, err = run_main(capsys, "search", *protocol(tiny_dir), "--tasks", str(tasks),
                            "--task-combine", "worst", "--out", str(tmp_path / "w"))
    assert code == 2 and "task weights do not apply" in err
    assert not (tmp_path / "w").exists()
