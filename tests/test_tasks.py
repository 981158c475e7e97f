"""Tasks of a search: the geometric-mean fitness, tasks.yaml checks before any model loads,
split roles kept apart across names and tasks."""
from __future__ import annotations

import math
import os

import pytest

from conftest import write_tasks_yaml
from pruner_zero.errors import ConfigError
from pruner_zero.tasks import (Task, check_tasks, geometric_fitness, load_tasks_file, name_tasks,
                               task_fitness)


def test_geometric_fitness_is_the_weighted_geometric_mean_of_ratios():
    assert geometric_fitness([0.9, 1.1], [1, 1]) == pytest.approx(math.sqrt(0.9 * 1.1))
    assert geometric_fitness([0.5, 2.0], [3, 1]) == pytest.approx((0.5 ** 3 * 2.0) ** 0.25)
    assert geometric_fitness([1.0], [2.0]) == 1.0
    assert geometric_fitness([0.9, math.inf], [1, 1]) == math.inf
    # the reference itself scores exactly 1 whatever the weights
    assert geometric_fitness([1.0, 1.0, 1.0], [0.2, 5, 1]) == pytest.approx(1.0)


def test_the_worst_task_combination_is_the_largest_ratio_and_the_mean_is_geometric():
    assert task_fitness([0.9, 1.1], [1, 1]) == geometric_fitness([0.9, 1.1], [1, 1])
    assert task_fitness([0.9, 1.1], [1, 1], "worst") == 1.1  # better on average, worse on one
    assert task_fitness([0.9, 0.95], [1, 1], "worst") == 0.95
    assert task_fitness([0.9, math.inf], [1, 1], "worst") == math.inf
    assert task_fitness([0.9, 0.0], [1, 1], "worst") == math.inf


@pytest.mark.parametrize("text,message", [
    ("- model: M\n  sparsty: 0.5\n", "unknown key sparsty"),
    ("- data_dir: D\n", "no model"),
    ("- model: M\n  sparsity: 1.5\n", "between 0 and 1"),
    ("- model: M\n  weight: -1\n", "weight must be a positive number"),
    # issue #22: 1e308 on two tasks made every fitness 1.0 or not finite; 1e-320 counted nothing
    ("- model: M\n  weight: 1.0e+308\n- model: N\n  weight: 1.0e+308\n", "between 1e-06 and 1e"),
    ("- model: M\n  weight: 1.0e-320\n", "weight must be between"),
    ("- model: M\n  nsamples: many\n", "nsamples must be an integer"),
    ("model: M\n", "non-empty YAML list"),
    ("- model: [unclosed\n", "not valid YAML"),
])
def test_a_bad_tasks_file_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        tasks = load_tasks_file(write_tasks_yaml(tmp_path, text), {})
        check_tasks(name_tasks(tasks))


def test_tasks_file_keys_fall_back_to_the_command_line(tmp_path):
    path = write_tasks_yaml(tmp_path, "- model: A\n  sparsity: 0.6\n- model: B\n  weight: 2\n")
    tasks = name_tasks(load_tasks_file(path, {"sparsity": 0.7, "nsamples": 16, "calib_split": "valid"}))
    assert [(t.model, t.sparsity, t.nsamples, t.weight) for t in tasks] == \
        [("A", 0.6, 16, 1.0), ("B", 0.7, 16, 2.0)]
    assert all(t.calib_split == "valid" and t.fitness_split == "valid" for t in tasks)
    assert [t.name for t in tasks] == ["A@0.6", "B@0.7"]


def test_the_report_split_can_never_be_the_selection_split():
    with pytest.raises(ConfigError, match="must differ from the report split"):
        check_tasks([Task(model="M", fitness_split="test", report_split="test", name="t")])


def test_a_structure_that_does_not_fit_the_model_is_refused_from_its_config(tiny_dir):
    task = Task(model=str(tiny_dir / "tiny-llama"), structure="3:5", name="t")
    with pytest.raises(ConfigError, match="divisible by 5"):
        check_tasks([task])


@pytest.mark.parametrize("text,message", [
    ("- model: {model}\n  colour: red\n", "unknown key colour"),
    ("- data_dir: {data}\n", "no model"),
    ("- model: {model}\n  sparsity: 1.5\n", "between 0 and 1"),
    ("- model: {model}\n  structure: '3:5'\n", "divisible by 5"),
])
def test_bad_tasks_stop_the_search_before_a_model_loads_and_touch_no_run_dir(
        tiny_dir, capsys, monkeypatch, text, message):
    from pruner_zero import model as model_mod
    from pruner_zero.cli import main

    def no_load(*a, **k):
        raise AssertionError("a model was loaded")

    # the workbench first: imported after the model module's patch, it would bind no_load and
    # the undo would "restore" that (every later test then failed to load a model)
    monkeypatch.setattr("pruner_zero.workbench.load_model", no_load)
    monkeypatch.setattr(model_mod, "load_model", no_load)
    out = tiny_dir / "runs" / "existing"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    tasks = write_tasks_yaml(tiny_dir, text.format(model=tiny_dir / "tiny-llama", data=tiny_dir / "data"))
    code = main(["search", "--tasks", str(tasks), "--out", str(out), "--quiet", "--space", "small"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    assert os.listdir(out) == ["notes.txt"]


def test_split_roles_are_checked_across_names_and_tasks(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text("text")
    d = str(data)
    # the hub's name and the local name are one split
    with pytest.raises(ConfigError, match="selection split .* must differ"):
        check_tasks([Task(model="M", data_dir=d, fitness_split="validation", report_split="valid")])
    with pytest.raises(ConfigError, match="calibration split .* must differ"):
        check_tasks([Task(model="M", data_dir=d, calib_split="test")])
    # issue #22: roles compare the files a spelling reads, not the spelling
    with pytest.raises(ConfigError, match="calibration split .* must differ"):
        check_tasks([Task(model="M", data_dir=d, calib_split="valid", fitness_split="train",
                          report_split="./valid")])
    with pytest.raises(ConfigError, match="calibration split .* must differ"):
        check_tasks([Task(model="M", data_dir=d, calib_split="../data/test")], selection=False)
    with pytest.raises(ConfigError, match="selection split .* must differ"):
        check_tasks([Task(model="M", data_dir=d, fitness_split="./test")])
    # one task's report text is another task's selection text (same data)
    with pytest.raises(ConfigError, match="reports on test, which task .* selection"):
        check_tasks(name_tasks([Task(model="A", data_dir=d),
                                Task(model="B", data_dir=d, fitness_split="test",
                                     report_split="valid")]))
    with pytest.raises(ConfigError, match="report split 'tst' not found"):
        check_tasks([Task(model="M", data_dir=d, report_split="tst")])
    check_tasks([Task(model="M", data_dir=d, calib_split="valid")])  # fine: valid twice, test once


def test_an_unquoted_n_m_structure_in_yaml_gets_a_hint(tmp_path):
    with pytest.raises(ConfigError, match="quote it"):
        load_tasks_file(write_tasks_yaml(tmp_path, "- model: M\n  structure: 2:4\n"), {})


@pytest.mark.parametrize("content, message", [
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    (b"\xff\xfe- model: x\n", r"not UTF-8 text \(byte 0\)"),
    ("- model: [unclosed\n", "not valid YAML"),
])
def test_unreadable_tasks_files_are_one_config_error(tmp_path, content, message):
    path = tmp_path / "tasks.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError, match=message):
        load_tasks_file(path, {})


def test_the_same_task_twice_and_empty_sparsity_items_are_refused():
    from pruner_zero.tasks import cross_tasks, parse_sparsities

    with pytest.raises(ConfigError, match="tasks 1 and 2 are the same task"):
        name_tasks(cross_tasks(["m"], [0.5, 0.5]))
    with pytest.raises(ConfigError, match="tasks 1 and 2 are the same task"):
        name_tasks(cross_tasks(["m", "m"], [0.5]))
    assert [t.name for t in name_tasks([Task("m", seed=0), Task("m", seed=1)])] == ["m@0.5", "m@0.5#2"]
    with pytest.raises(ConfigError, match="empty item"):
        parse_sparsities("0.5,,0.6")


def test_compare_refuses_calibrating_on_the_report_split(tmp_path):
    from conftest import write_tiny_assets

    root = write_tiny_assets(tmp_path)
    task = Task(str(root / "tiny-llama"), data_dir=str(root / "data"), calib_split="test",
                report_split="test")
    with pytest.raises(ConfigError, match="calibration split \\(test\\) must differ from the report"):
        check_tasks([task], selection=False)


def test_a_run_stores_its_tasks_local_paths_absolute(tmp_path, monkeypatch):
    """Issue #22: a relative --calib-data was stored as typed, so a resume from another folder
    calibrated on another file of that name. Model, data and corpus are stored absolute."""
    from conftest import write_tiny_assets

    from pruner_zero.search.api import _resolved_tasks
    from pruner_zero.search.config import SearchConfig

    root = write_tiny_assets(tmp_path)
    corpus = root / "corpus.jsonl"
    corpus.write_text('{"text": "some words"}\n')
    monkeypatch.chdir(root)
    config = _resolved_tasks(SearchConfig(model="tiny-llama", data_dir="data",
                                          calib_data="corpus.jsonl"), None)
    (task,) = config.task_list
    assert task.model == str(root / "tiny-llama") and task.data_dir == str(root / "data")
    assert task.calib_data == str(corpus)
    assert Task(model="hub/model").located() == Task(model="hub/model")  # a hub id stays


def test_checking_many_tasks_is_linear_in_their_number(tmp_path, monkeypatch):
    """Issue #22: a 2000-task file took 69 s to be refused (every pair of tasks was compared, and
    each split's file resolved again). Counted, not timed: naming builds each task once more,
    and each (data, split) is resolved once per check."""
    from pruner_zero import tasks as tasks_mod

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "valid", "test"):
        (data / f"{split}.txt").write_text("text")
    many = [Task(model="hub/model", data_dir=str(data), sparsity=0.1 + 0.8 * i / 300)
            for i in range(300)]
    built = []
    original = Task.__post_init__
    monkeypatch.setattr(Task, "__post_init__", lambda self: built.append(1) or original(self))
    named = name_tasks(many)
    assert len(built) == 300 and len({t.name for t in named}) == 300
    resolved = []
    original_id = tasks_mod._text_id
    monkeypatch.setattr(tasks_mod, "_text_id", lambda *a: resolved.append(a) or original_id(*a))
    check_tasks(named)
    assert len(resolved) == len(set(resolved)) <= 3
    with pytest.raises(ConfigError, match="tasks 2 and 301 are the same task"):
        name_tasks(many + [many[1]])
