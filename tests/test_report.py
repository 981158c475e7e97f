"""`pruner-zero report`: plots and markdown from a synthetic run directory (no model needed)."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from pruner_zero.errors import ConfigError
from pruner_zero.cli import main
from pruner_zero.report import (baseline_fitness, formula_size, pareto_front,
                                read_evaluations, write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# ppl per (metric, task) on the fitness windows; wiki weighs 2, c4 weighs 1
PPL = {("wanda", "wiki"): 20.0, ("wanda", "c4"): 30.0,
       ("magnitude", "wiki"): 40.0, ("magnitude", "c4"): 45.0,
       ("gblm", "wiki"): 19.0, ("gblm", "c4"): 31.5}
WEIGHTS = {"wiki": 2.0, "c4": 1.0}


def _expected(metric: str) -> float:
    """Hand-written weighted geometric mean of ppl(metric)/ppl(wanda)."""
    a = PPL[(metric, "wiki")] / PPL[("wanda", "wiki")]
    b = PPL[(metric, "c4")] / PPL[("wanda", "c4")]
    return (a ** 2 * b) ** (1 / 3)


def _baseline_rows() -> list[dict[str, str]]:
    rows = []
    for (metric, task), ppl in PPL.items():
        for phase, scale in (("fitness", 1.0), ("selection", 1.1), ("report", 1.2)):
            for seed in (0, 1, 2):
                # seeds differ only outside the fitness phase, so the fitness stays hand-checkable
                jitter = 0.0 if phase == "fitness" else 0.1 * (seed - 1)
                rows.append({"phase": phase, "task": task, "metric": metric, "formula": metric,
                             "seed": str(seed), "split": "valid", "windows": "8",
                             "ppl": repr(ppl * scale + jitter)})
    return rows


def make_run(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({
        "reference": "wanda",
        "tasks": [{"name": "wiki", "weight": 2.0}, {"name": "c4"}]}))  # c4: default weight 1
    (run / "history.csv").write_text(
        "generation,best,median,evaluated,valid,cached,seconds,polish\n"
        "0,1.30,inf,20,12,0,10.5,0\n"
        "1,1.05,2.5,20,15,3,9.0,0\n"
        "2,0.99,1.4,20,17,6,8.1,0\n"
        "3,0.97,1.2,20,18,8,7.7,0\n"
        "4,0.955,1.1,5,5,0,3.2,1\n")
    evals = []
    for g, formulas in enumerate([["W", "mul(W, X)", "sqrt(G)", "div(W, G)"],
                                  ["mul(abs(W), sqrt(X))", "add(W, 0.5)", "exp(G)"],
                                  ["mul(abs(W), mms(mul(X, X)))", "log(W)"]]):
        for i, f in enumerate(formulas):
            fit = [1.3, 1.05, math.inf, 0.99, 0.97, 2.0, math.nan][(g + i) % 7]
            rec = {"generation": g, "formula": f, "fitness": fit,
                   "status": "ok" if math.isfinite(fit) else "invalid",
                   "tasks": {"wiki": {"ppl": 20 * fit}, "c4": {"ppl": 30 * fit}}}
            if g:  # generation 0 is written like an old run: no size field
                rec["size"] = formula_size(f)
            evals.append(json.dumps(rec))
    evals.append('{"generation": 3, "formula": "mul(W,')  # half-written by a running search
    (run / "evaluations.jsonl").write_text("\n".join(evals))
    header = "phase,task,metric,formula,seed,split,windows,ppl"
    (run / "baselines.csv").write_text(
        header + "\n" + "\n".join(",".join(r[k] for k in header.split(","))
                                  for r in _baseline_rows()) + "\n")
    (run / "best_metric.txt").write_text("formula: mul(abs(W), mms(mul(X, X)))\nfitness: 0.955\n")
    (run / "hall_of_fame.csv").write_text(
        "rank,fitness,ppl,size,height,formula\n1,0.955,19.1,7,4,\"mul(abs(W), mms(mul(X, X)))\"\n")
    return run


def test_baseline_fitness_is_the_weighted_geometric_mean() -> None:
    got = baseline_fitness(_baseline_rows(), "wanda", WEIGHTS)
    assert set(got) == {"wanda", "magnitude", "gblm"}
    assert got["wanda"] == 1.0
    for metric in ("magnitude", "gblm"):
        assert got[metric] == pytest.approx(_expected(metric), rel=1e-12)
    # default weight 1: the plain geometric mean
    assert baseline_fitness(_baseline_rows(), "wanda", {})["gblm"] == pytest.approx(
        math.sqrt(19 / 20 * 31.5 / 30))
    assert baseline_fitness(_baseline_rows(), "sparsegpt", WEIGHTS) == {}
    # a run combining its tasks by the worst one: the largest ratio, weights aside
    assert baseline_fitness(_baseline_rows(), "wanda", WEIGHTS, combine="worst")["gblm"] == \
        pytest.approx(max(19 / 20, 31.5 / 30))


def test_pareto_front_keeps_only_points_no_smaller_metric_beats() -> None:
    points = [(3, 1.2), (1, 1.5), (3, 1.1), (5, 1.3), (6, 0.9), (2, math.inf), (8, 0.95),
              (7, 0.9)]
    assert pareto_front(points) == [(1, 1.5), (3, 1.1), (6, 0.9)]
    assert pareto_front([]) == []


def test_formula_size_counts_ops_and_terminals() -> None:
    assert formula_size("mul(W, sqrt(X))") == 4
    assert formula_size("add(W, 0.5)") == 3
    assert formula_size("mul(abs(W), mms(mul(X, X)))") == 7


def test_half_written_last_line_is_ignored(tmp_path: Path) -> None:
    records, bad = read_evaluations(make_run(tmp_path) / "evaluations.jsonl")
    assert len(records) == 9 and bad == 0
    assert any(math.isinf(r["fitness"]) for r in records)


def test_report_writes_images_and_markdown(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    run = make_run(tmp_path)
    path = write_report(run)
    assert path == run / "report.md"
    for name in ("fitness.png", "front.png"):
        data = (run / name).read_bytes()
        assert data[:8] == PNG_MAGIC
        img = matplotlib.image.imread(run / name)
        assert img.shape[0] > 0 and img.shape[1] > 0
    md = path.read_text()
    for metric in ("wanda", "magnitude", "gblm"):
        assert metric in md
    assert "](fitness.png)" in md and "](front.png)" in md
    assert "mms(mul(X, X))" in md and "4 (polish)" in md
    assert f"{_expected('gblm'):.4f}" in md
    assert "selection" in md and "±" in md
    assert not list(run.glob("*.tmp*"))


def test_a_run_by_the_worst_task_reports_its_baselines_so(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "fitness": {"task_combine": "worst"}}))
    pytest.importorskip("matplotlib")
    md = write_report(run).read_text()
    assert "the worst task's ppl / ppl(wanda)" in md
    assert f"{max(19 / 20, 31.5 / 30):.4f}" in md and f"{_expected('gblm'):.4f}" not in md


def test_report_skips_missing_parts_and_writes_elsewhere(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path)
    for name in ("history.csv", "baselines.csv", "config.json", "best_metric.txt"):
        (run / name).unlink()
    out = tmp_path / "out"
    md = write_report(run, out).read_text()
    assert (out / "front.png").is_file() and not (out / "fitness.png").exists()
    assert "history.csv missing" in md and "baselines.csv missing" in md
    assert "best_metric.txt missing" in md


def test_missing_run_dir_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(ConfigError, match="no config.json, history.csv or evaluations.jsonl"):
        write_report(tmp_path)


def test_missing_matplotlib_is_a_config_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"pruner-zero\[plot\]"):
        write_report(make_run(tmp_path))


def test_cli_subcommand_prints_report_path(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path)
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "report.md")


@pytest.mark.parametrize("name, text, section", [
    ("history.csv", "generation,best\n0,1.0,extra\n1\n", "history.csv is damaged"),
    ("history.csv", "best,median\n1.0,2.0\n", "history.csv is damaged"),
    ("history.csv", "generation,best,median\ninf,1.0,1.0\n", "history.csv is damaged"),
    ("history.csv", "generation,best,median\n0,1e308,-1e308\n1,-1e308,1e308\n", "history.csv is damaged"),
    ("evaluations.jsonl", '{"status": "ok", "fitness": 1.0, "size": NaN}\n', "evaluations.jsonl is damaged"),
    ("baselines.csv", "phase,ppl\nfitness,3.0\n", None),  # shown with ? for what is missing
    ("config.json", '{"reference": "wanda", "tasks": 5}', None),
])
def test_a_damaged_file_costs_only_its_own_section(tmp_path: Path, name, text, section) -> None:
    """Hand-edited or damaged run files: report.md is still written, and says what was skipped."""
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path)
    (run / name).write_text(text)
    md = write_report(run).read_text()
    assert "## Baselines" in md and "## Size vs fitness" in md
    if section is not None:
        assert section in md


@pytest.mark.parametrize("name", ["history.csv", "baselines.csv", "evaluations.jsonl",
                                  "config.json"])
def test_a_run_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path, name) -> None:
    """Issue #22: a history.csv saved by a spreadsheet (UTF-8 with BOM) was reported damaged."""
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path)
    plain = write_report(run).read_text()
    (run / name).write_text("\ufeff" + (run / name).read_text(), encoding="utf-8")
    md = write_report(run).read_text()
    assert "damaged" not in md and md == plain


def test_a_run_killed_before_its_first_generation_gets_a_report(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path)
    for name in ("history.csv", "evaluations.jsonl", "hall_of_fame.csv", "best_metric.txt"):
        (run / name).unlink()
    md = write_report(run).read_text()
    assert "history.csv missing" in md and "evaluations.jsonl missing" in md


def test_a_baseline_row_without_its_label_is_shown_as_missing_and_blames_no_other_file(
        tmp_path: Path) -> None:
    """Issue #22: a short row of baselines.csv (no metric) skipped the baselines section and
    blamed "baselines.csv or config.json"; it is shown with ? like any missing field."""
    pytest.importorskip("matplotlib")
    run = make_run(tmp_path)
    with open(run / "baselines.csv", "a") as fh:
        fh.write("report,wiki\n")
    md = write_report(run).read_text()
    assert "damaged" not in md and "config.json" not in md
    assert "| ? | wiki | report |" in md
