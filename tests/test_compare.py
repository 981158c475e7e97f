"""`pruner-zero compare`: the leaderboard of metrics x tasks on the report split (tiny model)."""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
import sys
from pathlib import Path

import pytest

from conftest import write_tiny_assets
from pruner_zero.cli import main
from pruner_zero.compare import CSV_FIELDS, TIE_MARK, compare, markdown_table, summarize
from pruner_zero.measurement import Measurement
from pruner_zero.methods import MetricSpec, resolve_metric_specs
from pruner_zero.errors import MetricError
from pruner_zero.runtime import Runtime
from pruner_zero.tasks import Task

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FORMULA = "mul(abs(W), sqrt(X))"  # commas inside parentheses: one metric, not three


def run_cli(argv: list[str]) -> int:
    """``pruner-zero ...`` as the command line runs it."""
    return main(argv)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A tiny model, its data, and a search run directory holding only best_metric.json."""
    root = write_tiny_assets(tmp_path_factory.mktemp("compare"))
    run = root / "myrun"
    run.mkdir()
    (run / "best_metric.json").write_text(json.dumps(
        {"data": "mul", "left": {"data": "W"}, "right": {"data": "W"}}))
    return root


def _common(root: Path) -> list[str]:
    return ["--data-dir", str(root / "data"), "--seqlen", "16", "--nsamples", "2",
            "--calib-split", "train", "--device", "cpu", "--no-cache", "--quiet"]


@pytest.fixture(scope="module")
def board(assets: Path, tmp_path_factory) -> dict:
    """One CLI run: 4 metrics (two built-ins, a formula, a run dir) x 2 sparsities x 2 seeds."""
    out = tmp_path_factory.mktemp("board") / "lb"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = run_cli(["compare", "--metrics", f"magnitude,wanda,{FORMULA},{assets / 'myrun'}",
                      "--model", str(assets / "tiny-llama"), "--sparsity", "0.5,0.6",
                      "--seeds", "2", "--out", str(out), *_common(assets)])
    with open(out / "leaderboard.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return {"rc": rc, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(), "out": out,
            "rows": rows}


def _table(markdown: str) -> list[list[str]]:
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_markdown_table_rows_and_columns(board):
    assert board["rc"] == 0
    table = _table(board["stdout"])
    header, rule, body = table[0], table[1], table[2:]
    assert header == ["metric", "tiny-llama@0.5", "tiny-llama@0.6"]
    assert all(set(c) <= set("-:") for c in rule)
    assert [r[0] for r in body] == ["dense", "magnitude", "wanda", FORMULA, "myrun:best"]
    assert all(len(r) == 3 for r in body)
    float(body[0][1]), float(body[0][2])  # dense: one number, no ± (no calibration)
    for col in (1, 2):
        assert sum(r[col].startswith("**") for r in body[1:]) == 1  # one best per task
        for r in body[1:]:
            assert "±" in r[col]
    legend = [ln for ln in board["stdout"].splitlines() if ln and not ln.startswith("|")]
    assert legend and "test" in legend[-1] and "2 calibration seeds" in legend[-1]
    assert TIE_MARK in legend[-1] and "Bold" in legend[-1]


def test_csv_means_and_stds_match_per_seed(board):
    rows = board["rows"]
    assert list(rows[0]) == CSV_FIELDS
    assert {(r["metric"], r["task"]) for r in rows} == {
        (m, t) for m in ("magnitude", "wanda", FORMULA, "myrun:best")
        for t in ("tiny-llama@0.5", "tiny-llama@0.6")}
    assert len(rows) == 8
    for r in rows:
        values = [float(v) for v in r["per_seed"].split(";")]
        assert r["seeds"] == "0;1" and len(values) == 2 and r["split"] == "test"
        assert math.isclose(float(r["ppl_mean"]), statistics.fmean(values), rel_tol=1e-12)
        assert math.isclose(float(r["ppl_std"]), statistics.stdev(values), rel_tol=1e-9,
                            abs_tol=1e-12)
        assert math.isclose(float(r["rel_dense"]), float(r["ppl_mean"]) / float(r["ppl_dense"]),
                            rel_tol=1e-12)
    dense = {r["task"]: r["ppl_dense"] for r in rows}
    assert all(r["ppl_dense"] == dense[r["task"]] for r in rows)
    table = _table(board["stdout"])
    assert table[2][1] == f"{float(dense['tiny-llama@0.5']):.4f}"


def test_calibration_seeds(board):
    by = {(r["metric"], r["task"]): r for r in board["rows"]}
    for task in ("tiny-llama@0.5", "tiny-llama@0.6"):
        mag = [float(v) for v in by[("magnitude", task)]["per_seed"].split(";")]
        assert mag[0] == mag[1] and float(by[("magnitude", task)]["ppl_std"]) == 0.0
        wanda = [float(v) for v in by[("wanda", task)]["per_seed"].split(";")]
        assert wanda[0] != wanda[1]  # seed 0 and 1 calibrate on different windows
        assert float(by[("wanda", task)]["ppl_std"]) > 0
        # the formula is wanda written out: the same masks, so the same numbers
        assert by[(FORMULA, task)]["per_seed"] == by[("wanda", task)]["per_seed"]
    assert by[("wanda", "tiny-llama@0.5")]["formula"] == "mul(W, sqrt(X))"


def test_run_dir_uses_best_metric_json(board):
    by = {(r["metric"], r["task"]): r for r in board["rows"]}
    for task in ("tiny-llama@0.5", "tiny-llama@0.6"):
        r = by[("myrun:best", task)]
        assert r["formula"] == "mul(W, W)"
        # W*W ranks weights like |W|: magnitude's masks, magnitude's perplexity
        assert r["per_seed"] == by[("magnitude", task)]["per_seed"]


def test_png_written(board):
    pytest.importorskip("matplotlib")
    png = board["out"] / "leaderboard.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert png.stat().st_size > 5000
    assert not list(board["out"].glob("*.tmp*"))


def test_api_without_matplotlib(assets, tmp_path, monkeypatch):
    """No matplotlib: the CSV is written and one line says how to get the plot."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    logged: list[str] = []
    task = Task(model=str(assets / "tiny-llama"), data_dir=str(assets / "data"), nsamples=2,
                seqlen=16, sparsity=0.5)
    result = compare(["magnitude"], [task], seeds=1, runtime=Runtime(device="cpu"),
                     out=tmp_path / "o", progress=False, log=logged.append)
    assert (tmp_path / "o" / "leaderboard.csv").is_file()
    assert not (tmp_path / "o" / "leaderboard.png").exists()
    assert sum("pip install 'pruner-zero[plot]'" in m for m in logged) == 1
    assert set(result["files"]) == {"csv"}
    assert len(result["rows"]) == 1 and result["rows"][0]["seed"] == 0
    assert "| magnitude | **" in result["markdown"]


def test_best_and_tie_marks():
    """Bold = lowest mean; ≈ = within the larger seed std of the best; else plain."""
    specs = [MetricSpec(n, n, None) for n in ("a", "b", "c")]
    task = Task(model="m", name="t")
    per = {"a": [10.0, 10.4], "b": [10.3, 10.4], "c": [11.0, 11.1]}
    rows = [Measurement(metric=m, task="t", seed=s, split="test", ppl=v)
            for m, vals in per.items() for s, v in enumerate(vals)]
    summary = summarize(rows, specs, [task], {"t": 9.0}, 2)
    flags = {c["metric"]: (c["best"], c["tie"]) for c in summary}
    assert flags == {"a": (True, False), "b": (False, True), "c": (False, False)}
    body = _table(markdown_table(summary, [task], 2))[2:]
    assert body[0] == ["dense", "9.0000"]
    assert body[1][1].startswith("**10.2000 ±") and body[1][1].endswith("**")
    assert body[2][1].endswith(TIE_MARK) and TIE_MARK not in body[3][1]


def test_metric_list_splitting(assets):
    specs = resolve_metric_specs(f"wanda, {FORMULA},wanda,sparsegpt,{assets / 'myrun'}")
    assert [s.label for s in specs] == ["wanda", FORMULA, "sparsegpt", "myrun:best"]
    assert specs[2].formula == "" and specs[3].formula == "mul(W, W)"


@pytest.fixture
def no_model_load(monkeypatch):
    """Any attempt to load a model fails the test."""
    import pruner_zero.workbench as wb

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(wb, "load_model", boom)


@pytest.mark.parametrize("case", ["metric", "sparsity", "tasks_key", "run_dir"])
def test_bad_input_one_error_line_no_model(case, assets, tmp_path, capsys, no_model_load):
    metrics, extra, expected = "magnitude,wanda", ["--model", str(tmp_path / "no-such-model")], ""
    if case == "metric":
        metrics, expected = "magnitude,nosuchmetric", "unknown metric 'nosuchmetric'"
    elif case == "sparsity":
        extra += ["--sparsity", "0.5,1.5"]
        expected = "--sparsity must be strictly between 0 and 1"
    elif case == "tasks_key":
        yaml = tmp_path / "tasks.yaml"
        yaml.write_text(f"- model: {tmp_path / 'no-such-model'}\n  sparsty: 0.5\n")
        extra, expected = ["--tasks", str(yaml)], "unknown key sparsty"
    elif case == "run_dir":
        (tmp_path / "unfinished").mkdir()
        metrics, expected = f"wanda,{tmp_path / 'unfinished'}", "best_metric.json"
    rc = run_cli(["compare", "--metrics", metrics, *extra, *_common(assets)])
    err = capsys.readouterr()
    lines = [ln for ln in err.err.splitlines() if ln.strip()]
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("error: "), err.err
    assert expected in lines[0] and "model path not found" not in lines[0]
    assert err.out == ""


def test_seeds_checked_before_model(assets, tmp_path, capsys, no_model_load):
    for seeds in ("0", "99999999999999999999"):  # a huge count would stall with no output
        rc = run_cli(["compare", "--metrics", "wanda", "--model", str(assets / "tiny-llama"),
                      "--seeds", seeds, *_common(assets)])
        assert rc == 2
        assert capsys.readouterr().err.strip() == \
            f"error: --seeds must be an integer from 1 to 100, got {seeds}"


def test_bad_metric_is_metric_error():
    with pytest.raises(MetricError):
        resolve_metric_specs("mul(W)")


def test_a_directory_named_like_a_formula_does_not_replace_the_formula(tmp_path, monkeypatch):
    from pruner_zero.methods import resolve_metric_spec

    monkeypatch.chdir(tmp_path)
    (tmp_path / "X").mkdir()
    assert resolve_metric_spec("X").formula == "X"


def test_search_and_compare_refuse_a_decoder_mostly_outside_nn_linear(tmp_path, capsys, monkeypatch):
    """As prune does: a mixture-of-experts decoder (experts as 3-D tensors) is refused before
    any work unless --allow-partial, then measured with a warning."""
    import pruner_zero.model as model_mod
    from pruner_zero.cli import main

    root = write_tiny_assets(tmp_path)
    monkeypatch.setattr(model_mod, "linear_share", lambda model, linears: 0.4)
    common = ["--model", str(root / "tiny-llama"), "--data-dir", str(root / "data"), "--nsamples",
              "2", "--seqlen", "16", "--device", "cpu", "--quiet", "--no-cache"]
    search = ["search", *common, "--generations", "0", "--population", "4", "--space", "small",
              "--final-top", "1", "--confirm-seeds", "1", "--baselines", "", "--out",
              str(tmp_path / "run")]
    compare = ["compare", *common, "--metrics", "wanda", "--seeds", "1"]
    for argv in (search, compare):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "hold 40.0% of its parameters" in err and "--allow-partial" in err, err
    assert not (tmp_path / "run").exists()
    for argv in (search, compare):
        assert main([*argv, "--allow-partial"]) == 0
        assert "warning: the decoder's nn.Linear weights hold 40.0%" in capsys.readouterr().err


def test_eval_windows_bounds_every_cell_and_the_table_says_so(assets, tmp_path):
    """--eval-windows N: every cell (and the dense row) rests on N windows spread evenly over the
    report split; the same windows as ``eval`` measures with --eval-windows N."""
    out = tmp_path / "lb"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        rc = run_cli(["compare", "--metrics", "magnitude", "--model", str(assets / "tiny-llama"),
                      "--sparsity", "0.5", "--seeds", "1", "--eval-windows", "3", "--out", str(out),
                      *_common(assets)])
    assert rc == 0
    rows = list(csv.DictReader(open(out / "leaderboard.csv", newline="", encoding="utf-8")))
    assert [r["windows"] for r in rows] == ["3"]
    assert "3 windows spread evenly over it" in stdout.getvalue()
    dense = io.StringIO()
    with contextlib.redirect_stdout(dense), contextlib.redirect_stderr(io.StringIO()):
        assert run_cli(["eval", "--model", str(assets / "tiny-llama"), "--eval-windows", "3",
                        "--data-dir", str(assets / "data"), "--seqlen", "16", "--device", "cpu",
                        "--quiet"]) == 0
    assert float(rows[0]["ppl_dense"]) == pytest.approx(float(dense.getvalue()), rel=1e-4)


def test_a_plot_that_fails_costs_neither_the_table_nor_the_csv(assets, tmp_path, monkeypatch):
    """Issue #22: a `$`-quoted label died in matplotlib after all the measuring (no table, no
    CSV). Such a label is drawn as typed now, and any plot failure costs the plot only."""
    pytest.importorskip("matplotlib")
    from pruner_zero import compare as compare_mod

    task = Task(model=str(assets / "tiny-llama"), data_dir=str(assets / "data"), nsamples=2,
                seqlen=16, sparsity=0.5, name="$\\frac{a$")
    logged: list[str] = []
    result = compare(["magnitude"], [task], seeds=1, runtime=Runtime(device="cpu"),
                     out=tmp_path / "o", progress=False, log=logged.append)
    assert (tmp_path / "o" / "leaderboard.png").read_bytes()[:8] == PNG_MAGIC
    assert set(result["files"]) == {"csv", "png"}

    def broken(*a, **k):
        raise ValueError("a font went missing")

    monkeypatch.setattr(compare_mod, "plot_leaderboard", broken)
    logged.clear()
    result = compare(["magnitude"], [task], seeds=1, runtime=Runtime(device="cpu"),
                     out=tmp_path / "p", progress=False, log=logged.append)
    assert (tmp_path / "p" / "leaderboard.csv").is_file()
    assert not (tmp_path / "p" / "leaderboard.png").exists() and set(result["files"]) == {"csv"}
    assert any("leaderboard.png skipped: the plot failed (ValueError: a font went missing)" in m
               for m in logged)
    assert "| magnitude |" in result["markdown"]
