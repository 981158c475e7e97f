"""SearchConfig: one typed, validated config for the CLI, search() and config.json; the one
resume rule for both front ends; bad options and a damaged config.json refused before any work."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from conftest import protocol, run_main, unfinished_after_generation_0

from pruner_zero.cli import build_parser, main
from pruner_zero.cli.search import config_from_args
from pruner_zero.errors import ConfigError
from pruner_zero.search.config import SearchConfig
from pruner_zero.search.stored import CONFIG_VERSION, check_resume, config_dict, read_config
from pruner_zero.search.rundir import CONFIG


def version_2_config() -> dict:
    """config.json as the code before SearchConfig wrote it (version 2), literally."""
    return {
        "command": "search", "version": 2, "created": "2026-12-02T00:42:44",
        "tasks": [{"model": "/work/shared/models/wiki-llama-5m",
                   "data_dir": "/work/shared/data/wikitext-2", "calib_split": "valid",
                   "fitness_split": "valid", "report_split": "test", "nsamples": 32,
                   "seqlen": 256, "seed": 0, "sparsity": 0.6, "structure": "unstructured",
                   "calibration": "dense", "calib_data": None, "text_join": "concat",
                   "weight": 1.0, "name": "wiki-llama-5m@0.6"}],
        "runtime": {"device": "cpu", "dtype": "auto", "batch_size": 8, "device_map": None,
                    "revision": None, "trust_remote_code": False},
        "compare": "row", "cache_dir": "/root/.cache/pruner_zero",
        "space": {"spec": "paper", "definition": {
            "name": "paper", "terminals": ["W", "G", "X"],
            "unary_ops": ["sqr", "neg", "abs", "log", "exp", "sqrt", "tanh", "pow", "skp",
                          "mms", "zsn"],
            "binary_ops": ["add", "sub", "mul", "div"],
            "init_min_depth": 2, "init_max_depth": 4, "max_height": 8, "max_size": 40}},
        "gp": {"population": 6, "generations": 1, "tournament": 3, "cx_prob": 0.5,
               "mut_prob": 0.3, "elite": 2, "hof_size": 10, "max_height": 8, "seed": 3,
               "polish": 3},
        "fitness": {"fitness_windows": 16, "windows_spread": True, "race_factor": None,
                    "race_chunk": 16, "canonical_cache": True, "fingerprint_cache": True},
        "reference": "wanda", "baselines": ["wanda"], "confirm_seeds": 1,
        "seed_metrics": ["wanda"], "final_top": 1, "allow_partial": False,
    }


PLAIN_RECIPE = {"allocation": {"kind": "uniform", "owl_m": 5.0, "owl_lambda": 0.08},
                "update": "none"}


def test_a_version_2_config_is_migrated_to_the_current_version():
    old = version_2_config()
    config = read_config(copy.deepcopy(old), out="runs/x")
    assert config.population == 6 and config.seed == 3 and config.fitness_windows == 16
    assert config.baselines == ("wanda",) and config.task_list[0].nsamples == 32
    assert config.runtime().device == "cpu" and config.cache_dir == "/root/.cache/pruner_zero"
    assert config.workers == 0 and config.ray_address is None
    migrated = copy.deepcopy(old)  # version 3 adds the statistics' placement, at version 2's values
    migrated["version"] = 6  # and version 4 the tail's window budgets: an old run used whole splits
    migrated["runtime"].update(stats_device=None, stats_dtype="float32")
    migrated.update(confirm_windows=None, eval_windows=None)
    migrated.update(recipe=PLAIN_RECIPE)  # version 5: a recipe; an old run's was plain
    migrated["gp"]["recipe_space"] = None
    migrated["fitness"]["task_combine"] = "mean"  # version 6: an old run's tasks by the mean
    assert config.task_combine == "mean"
    assert config.confirm_windows is None and config.eval_windows is None
    assert config_dict(config) == migrated
    assert config_dict(read_config(config_dict(config), out="runs/x")) == migrated
    assert CONFIG_VERSION == 6


def test_a_version_3_config_keeps_its_whole_split_tail():
    """A run made before the window budgets resumes as it was made: whole splits."""
    old = version_2_config()
    old["version"] = 3
    old["runtime"].update(stats_device=None, stats_dtype="float32")
    config = read_config(copy.deepcopy(old), out="runs/x")
    assert (config.confirm_windows, config.eval_windows) == (None, None)
    assert config_dict(config) == {**old, "version": 6, "confirm_windows": None,
                                   "eval_windows": None, "recipe": PLAIN_RECIPE,
                                   "gp": {**old["gp"], "recipe_space": None},
                                   "fitness": {**old["fitness"], "task_combine": "mean"}}


def test_a_new_search_has_bounded_window_budgets_and_zero_means_the_whole_split(tmp_path):
    from pruner_zero.search.options import DEFAULT_CONFIRM_WINDOWS, DEFAULT_REPORT_WINDOWS

    config = SearchConfig(out=tmp_path / "x", model="m").checked()
    assert (config.confirm_windows, config.eval_windows) == (DEFAULT_CONFIRM_WINDOWS,
                                                             DEFAULT_REPORT_WINDOWS)
    config = SearchConfig(out=tmp_path / "x", model="m", confirm_windows=0, eval_windows=0).checked()
    assert (config.confirm_windows, config.eval_windows) == (None, None)
    for key in ("confirm_windows", "eval_windows"):
        with pytest.raises(ConfigError, match=f"--{key.replace('_', '-')} must be a positive"):
            SearchConfig(out=tmp_path / "x", model="m", **{key: -2}).checked()
    stored = version_2_config()
    stored.update(version=4, confirm_windows=0, eval_windows=None)
    stored["runtime"].update(stats_device=None, stats_dtype="float32")
    with pytest.raises(ConfigError, match="'confirm_windows' must be a positive integer or null"):
        read_config(stored, out="runs/x")


def test_a_stored_worst_task_run_with_unequal_weights_is_refused():
    d = version_2_config()
    d["tasks"].append({**d["tasks"][0], "sparsity": 0.7, "weight": 2.0, "name": "wiki@0.7"})
    assert read_config(copy.deepcopy(d), out="runs/x").task_combine == "mean"
    d["fitness"]["task_combine"] = "worst"
    with pytest.raises(ConfigError, match="task weights do not apply"):
        read_config(d, Path("runs/x") / CONFIG)


def test_round_trip_and_free_options_are_not_stored():
    config = read_config(version_2_config(), out="runs/x")
    other = read_config(config_dict(config), out="runs/y", workers=4,
                                   ray_address="ray://head:10001", progress=False)
    assert config_dict(other) == config_dict(config)
    assert "workers" not in json.dumps(config_dict(other))
    assert "ray_address" not in json.dumps(config_dict(other))
    assert (other.workers, other.ray_address) == (4, "ray://head:10001")


def test_another_config_version_is_refused():
    old = version_2_config()
    old["version"] = 1
    with pytest.raises(ConfigError, match="older pruner-zero .config version 1"):
        read_config(old, Path("runs/x") / CONFIG)


@pytest.mark.parametrize("key, value, named", [
    ("confirm_seeds", 0, "'confirm_seeds' must be an integer from 1 to 100"),
    ("final_top", -1, "'final_top' must be a non-negative integer"),
    ("fitness.race_chunk", 0, "'fitness.race_chunk' must be a positive integer"),
    ("fitness.race_factor", 0.5, "'fitness.race_factor' must be at least 1"),
    ("gp.elite", 99, "--elite"),
    ("compare", "column", "'compare' must be row or layer"),
    ("fitness.task_combine", "median", "'fitness.task_combine' must be one of mean, worst"),
    ("reference", "sparsegpt", "sparsegpt is a pruning method"),
])
def test_a_stored_value_is_checked_as_an_option_is(key, value, named):
    d = version_2_config()
    where = d
    *path, last = key.split(".")
    for k in path:
        where = where[k]
    where[last] = value
    with pytest.raises(ConfigError, match="config.json is damaged") as err:
        read_config(d, Path("runs/x") / CONFIG)
    assert named in str(err.value)


@pytest.mark.parametrize("options, named", [
    ({"final_top": -1}, "--final-top must be a non-negative integer"),
    ({"confirm_seeds": 101}, "--confirm-seeds must be an integer from 1 to 100"),
    ({"race_factor": 0.5}, "--race-factor must be at least 1"),
    ({"race_chunk": 0}, "--race-chunk must be a positive integer"),
    ({"fitness_windows": -3}, "--fitness-windows must be a positive number of windows"),
    ({"population": 1}, "--population must be at least 2"),
    ({"workers": -1}, "workers must be a non-negative integer"),
    ({"workers": 1.5}, "workers must be a non-negative integer"),
    ({"ray_address": 5}, "ray_address must be"),
    ({"task_combine": "best"}, "--task-combine must be one of mean, worst"),
    ({"cache_dir": 5}, "cache_dir must be a path"),
    ({"seed_metrics": "wanda,wanda,wanda", "population": 2, "tournament": 2, "elite": 1},
     "3 seed metrics do not fit"),
])
def test_validation_errors_name_the_option(options, named):
    with pytest.raises(ConfigError, match=named):
        SearchConfig(out="runs/x", model="m", **options).checked()


def test_checked_normalises():
    config = SearchConfig(out="r", baselines="wanda, magnitude", seed_metrics="gblm",
                          fitness_windows=0, polish=30, hof_size=4).checked()
    assert config.baselines == ("wanda", "magnitude") and config.seed_metrics == ("gblm",)
    assert config.fitness_windows is None and config.polish == 4
    assert config.max_height == config.space_definition["max_height"]


def test_an_unknown_search_option_is_refused_by_name(tmp_path):
    from pruner_zero import search

    with pytest.raises(ConfigError, match="search has no option nsample"):
        search("m", tmp_path / "r", nsample=4)


def test_the_resume_rule_refuses_changed_options_and_frees_where_and_how():
    check_resume(SearchConfig(out="r", resume=True, progress=False, log=print, workers=8,
                              ray_address="auto"))
    for options, named in (({"generations": 30}, "generations"), ({"workers": 2, "elite": 1}, "elite"),
                           ({"model": "other"}, "model"), ({"nsamples": 4}, "nsamples")):
        with pytest.raises(ConfigError, match=f"resume=True continues .*; drop {named} "):
            check_resume(SearchConfig(out="r", resume=True, **options))


def test_cli_flags_map_to_fields_and_the_resume_rule_names_flags(tmp_path, capsys):
    parser = build_parser()
    args = parser.parse_args(["search", "--model", "m", "--out", "r", "--population", "8",
                              "--no-fingerprint-cache", "--baselines", "wanda", "--seed", "2",
                              "--gp-seed", "5", "--fitness-windows", "0"])
    config = config_from_args(args)
    assert (config.model, config.out, config.population) == (["m"], "r", 8)
    assert config.fingerprint_cache is False and config.canonical_cache is True
    assert (config.seed, config.calib_seed) == (5, 2) and config.baselines == "wanda"
    assert config.checked().fitness_windows is None
    for extra, named in ((["--no-cache"], "--no-cache"), (["--seed", "4"], "--seed"),
                         (["--no-canonical-cache", "--elite", "1"], "--elite, --no-canonical-cache"),
                         (["--out", str(tmp_path)], "--out"),
                         # given at its default value: still given, the run's value would win
                         (["--task-combine", "mean"], "--task-combine"),
                         (["--population", str(args._search_parser.get_default("population"))],
                          "--population"), (["--seed", "0", "--device", "cpu"], "--device, --seed")):
        code = main(["search", "--resume", str(tmp_path / "none"), "--quiet", *extra])
        err = capsys.readouterr().err
        assert code == 2 and f"--resume continues the run with the options in its config.json; " \
                              f"drop {named} (" in err, err


@pytest.fixture
def small_run(tiny_dir, capsys) -> Path:
    out = tiny_dir / "runs" / "cfg-run"
    assert main(["search", "--model", str(tiny_dir / "tiny-llama"), "--data-dir",
                 str(tiny_dir / "data"), "--seqlen", "16", "--nsamples", "2", "--device", "cpu",
                 "--cache-dir", str(tiny_dir / "stats-cache"), "--quiet", "--space", "small",
                 "--generations", "0", "--population", "4", "--final-top", "1",
                 "--confirm-seeds", "1", "--baselines", "", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def test_resume_of_a_real_run_python_and_cli(small_run, capsys):
    from pruner_zero import search

    stored = (small_run / CONFIG).read_text()
    config = read_config(json.loads(stored), small_run / CONFIG, out=small_run)
    assert config.space == "small" and config.population == 4 and config.baselines == ()
    with pytest.raises(ConfigError, match="drop population "):
        search(out=small_run, resume=True, population=5)
    code = main(["search", "--resume", str(small_run), "--population", "5", "--quiet"])
    assert code == 2 and "drop --population" in capsys.readouterr().err
    entries = search(SearchConfig(out=small_run, resume=True, progress=False, workers=3,
                                  ray_address="auto", log=lambda *_: None))
    assert entries and entries[0].formula
    assert main(["search", "--resume", str(small_run), "--quiet"]) == 0
    assert (small_run / CONFIG).read_text() == stored  # a resume never rewrites the config


# ------------------------------------------------------------------ hardening (issue 12)

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
    unfinished_after_generation_0(tiny_dir, out)
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


def test_unbalanced_seed_metrics_are_refused_before_the_model_loads(tmp_path, capsys):
    code, out, err = run_main(capsys, "search", "--model", str(tmp_path / "absent"), "--out",
                         str(tmp_path / "run"), "--seed-metrics", "wanda,mul(W, G")
    assert code == 2 and "--seed-metrics: unbalanced parentheses" in err
    assert not (tmp_path / "run").exists()
