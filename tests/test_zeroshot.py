"""Zero-shot accuracy through lm-eval: task lists, the table, and a real run of a local task
(YAML + JSON lines written here) against the shared model, dense and pruned, offline."""
from __future__ import annotations

import json
import random
import sys

import pytest

from conftest import SHARED_DATA, SHARED_MODEL, needs_shared
from pruner_zero.cli import main
from pruner_zero.errors import ConfigError
from pruner_zero.zeroshot import PAPER_TASKS, parse_tasks, summary_table

TASK = "pz_word_order"


def test_task_lists_expand_paper_and_refuse_empty_items():
    assert parse_tasks("boolq, rte") == ["boolq", "rte"]
    assert parse_tasks("paper,boolq") == list(PAPER_TASKS)
    assert parse_tasks(None) == []
    with pytest.raises(ConfigError, match="separated by commas"):
        parse_tasks("boolq,,rte")


def test_the_summary_table_puts_each_model_beside_the_other():
    table = summary_table({"dense": {"a": {"acc": 0.5, "acc_stderr": 0.01}, "b": {"acc": 0.75}},
                           "pruned": {"a": {"acc": 0.25, "acc_stderr": None}}})
    assert table.splitlines() == [
        "| task | dense acc (%) | pruned acc (%) |", "|---|---|---|",
        "| a | 50.00 ± 1.00 | 25.00 |", "| b | 75.00 | - |", "| mean | 62.50 | - |"]


def test_without_lm_eval_tasks_are_one_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval raises ImportError
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)
    code = main(["eval", "--model", str(tmp_path / "absent"), "--tasks", "boolq", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--tasks needs lm-eval" in err and "pruner-zero[zeroshot]" in err


def write_word_order_task(directory, n: int = 24):
    """A two-choice task of real WikiText-2 test text: which continuation of a context is the
    true one, the other being the same words shuffled. A language model that learned English
    word order picks the true one (even a model pruned to 90% mostly does: its embeddings and
    head alone make a bigram model)."""
    rng = random.Random(0)
    lines = [l.split() for l in SHARED_DATA.joinpath("test.txt").read_text().splitlines()
             if len(l.split()) > 40 and not l.strip().startswith("=")]
    rows = []
    for words in lines[:n]:
        true, shuffled = words[20:32], words[20:32]
        while shuffled == true:
            shuffled = rng.sample(true, len(true))
        choices = [" " + " ".join(true), " " + " ".join(shuffled)]
        label = rng.randint(0, 1)
        if label:
            choices.reverse()
        rows.append({"context": " ".join(words[:20]), "choices": choices, "label": label})
    data = directory / "word_order.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (directory / "word_order.yaml").write_text(
        f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n")
    return directory


@pytest.mark.slow
@needs_shared
def test_zero_shot_accuracy_of_the_dense_and_the_pruned_model_offline(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    tasks = write_word_order_task(tmp_path)
    common = ["--model", str(SHARED_MODEL), "--data-dir", str(SHARED_DATA), "--seqlen", "256",
              "--device", "cpu", "--quiet", "--tasks", TASK, "--tasks-include", str(tasks),
              "--eval-windows", "16"]  # the subject is the accuracy: a CPU-sized perplexity
    assert main(["eval", *common, "--report", str(tmp_path / "dense.json")]) == 0
    out = capsys.readouterr().out.splitlines()
    dense = json.loads((tmp_path / "dense.json").read_text())["zero_shot"]
    acc = dense["results"]["model"][TASK]
    assert dense["tasks"] == [TASK] and acc["samples"] == 24 and 0 <= acc["acc_stderr"] < 0.2
    assert acc["acc"] >= 0.75  # the model knows WikiText-2 word order
    assert out[1] == "| task | model acc (%) |" and out[3].startswith(f"| {TASK} | ")

    saved = tmp_path / "pruned-model"
    code = main(["prune", *common, "--calib-split", "valid", "--nsamples", "8", "--no-cache",
                 "--metric", "magnitude", "--sparsity", "0.9", "--no-dense-ppl",
                 "--save", str(saved), "--report", str(tmp_path / "pruned.json")])
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    report = json.loads((tmp_path / "pruned.json").read_text())
    pruned = report["zero_shot"]["results"]
    assert list(pruned) == ["pruned"] and pruned["pruned"][TASK]["samples"] == 24
    assert json.loads(out[0])["ppl"] == report["ppl"] and out[1] == "| task | pruned acc (%) |"
    # scored in memory on the pruned weights: what the saved pruned model scores, not the dense
    assert pruned["pruned"][TASK]["acc"] != acc["acc"]
    assert main(["eval", *common, "--model", str(saved), "--report", str(tmp_path / "s.json")]) == 0
    capsys.readouterr()
    again = json.loads((tmp_path / "s.json").read_text())["zero_shot"]["results"]["model"]
    assert again[TASK] == pruned["pruned"][TASK]


def test_an_unknown_task_fails_before_the_model_loads(tmp_path, capsys):
    pytest.importorskip("lm_eval")
    code = main(["prune", "--model", str(tmp_path / "absent"), "--metric", "wanda",
                 "--tasks", "boolq,no_such_task", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "lm-eval knows no task no_such_task" in err and "absent" not in err


def _local_task(directory, name: str, extra: str = "", rows: int = 4):
    """A tiny local multiple-choice task (JSON lines beside its YAML)."""
    data = directory / f"{name}.jsonl"
    data.write_text("".join(json.dumps({"context": f"a b {i}", "choices": [" c", " d"],
                                        "label": i % 2}) + "\n" for i in range(rows)))
    (directory / f"{name}.yaml").write_text(
        f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{label}}'\nmetric_list:\n"
        "  - metric: acc\n" + extra)


def test_broken_or_shadowing_local_tasks_fail_before_the_model_loads(tmp_path):
    """Issue #22: a task file that does not parse was reported as an unknown task; a local
    `boolq` silently replaced lm-eval's; a task whose !function does not import, or whose data
    file is empty, failed only after pruning. Each is one error before any model loads (the
    checks one by one on one task index: building lm-eval's takes ~20 s)."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from pruner_zero.zeroshot import ZeroShot, _build_tasks, _refuse_shadowing, _unparsable_yaml

    dirs = {name: tmp_path / name for name in ("broken", "shadow", "bad", "ok")}
    for d in dirs.values():
        d.mkdir()
    (dirs["broken"] / "mine.yaml").write_text("task: [mine\n")
    _local_task(dirs["shadow"], "boolq")
    _local_task(dirs["bad"], "pz_no_import", "process_docs: !function absent_module.docs\n")
    _local_task(dirs["bad"], "pz_empty", rows=0)
    _local_task(dirs["ok"], "pz_fine")
    include = [str(d) for d in dirs.values()]
    manager = TaskManager(include_path=include)
    assert "mine" not in manager.all_tasks
    assert [b.split(" (")[0] for b in _unparsable_yaml(include)] == [str(dirs["broken"] / "mine.yaml")]
    with pytest.raises(ConfigError, match="defines boolq, which lm-eval also defines"):
        _refuse_shadowing(["pz_fine", "boolq"], manager, include)
    _refuse_shadowing(["pz_fine", "arc_easy"], manager, include)  # lm-eval's own: fine
    for name in ("pz_no_import", "pz_empty"):
        with pytest.raises(ConfigError, match=f"lm-eval task {name} cannot be built"):
            _build_tasks([name], manager)
    _build_tasks(["pz_fine"], manager)
    # the whole check, as prune and eval run it: an unknown name says which files do not parse
    with pytest.raises(ConfigError, match="knows no task mine.*do not parse: .*mine.yaml"):
        ZeroShot.checked("mine", [str(dirs["broken"]), str(dirs["ok"])])
    record = ZeroShot(["pz_fine"], manager, None, [str(dirs["ok"])]).as_dict()
    assert record["include"] == [str(dirs["ok"])]
    assert record["sources"] == {"pz_fine": str(dirs["ok"] / "pz_fine.yaml")}


def test_a_task_failing_after_pruning_still_saves_and_reports(tiny_dir, monkeypatch):
    """Issue #22: zero-shot failing on the pruned model lost --save and --report. They are
    written, the report says what failed, and the failure is one error naming what was kept."""
    from pruner_zero import pruning, zeroshot
    from pruner_zero.zeroshot import ZeroShot

    calls = []

    def scored(model, tokenizer, tasks, manager, batch_size, limit):
        calls.append(1)
        if len(calls) == 2:
            raise ConfigError("lm-eval failed on pz: IndexError: list index out of range")
        return {"pz": {"acc": 0.5, "acc_stderr": 0.1, "samples": 4}}

    monkeypatch.setattr(zeroshot, "zero_shot", scored)
    save, report = tiny_dir / "saved", tiny_dir / "report.json"
    with pytest.raises(ConfigError, match="zero-shot of the pruned model failed: .*IndexError.*"
                                          "the pruned model .*saved and the report .*written"):
        pruning.prune(str(tiny_dir / "tiny-llama"), "magnitude", save=save, report=report,
                      zero_shot=ZeroShot(["pz"], None, None), nsamples=2, seqlen=16,
                      data_dir=str(tiny_dir / "data"), device="cpu", log=lambda m: None)
    written = json.loads(report.read_text())
    assert written["ppl"] > 0 and written["zero_shot"]["results"]["dense"]["pz"]["acc"] == 0.5
    assert "IndexError" in written["zero_shot"]["error"]
    assert (save / "pruning.json").is_file()


def test_eval_keeps_its_report_when_a_task_fails(tiny_dir, capsys, monkeypatch):
    from pruner_zero import zeroshot
    from pruner_zero.zeroshot import ZeroShot

    def failing(*a, **k):
        raise ConfigError("lm-eval failed on pz: KeyError: 'label'")

    monkeypatch.setattr(zeroshot, "zero_shot", failing)
    monkeypatch.setattr(ZeroShot, "checked", classmethod(lambda cls, *a: cls(["pz"], None, None)))
    report = tiny_dir / "eval.json"
    code = main(["eval", "--model", str(tiny_dir / "tiny-llama"), "--data-dir",
                 str(tiny_dir / "data"), "--seqlen", "16", "--device", "cpu", "--quiet",
                 "--tasks", "pz", "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 2 and "zero-shot failed: lm-eval failed on pz: KeyError" in err
    assert f"the report {report} was written" in err
    written = json.loads(report.read_text())
    assert written["ppl"] > 0 and "KeyError" in written["zero_shot"]["error"]
