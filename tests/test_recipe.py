"""recipe.py: a metric with its allocation and update, in one file that round-trips and that
`prune --metric` reuses; a given allocation (--allocation FILE) and what it refuses."""
import json

import pytest
from conftest import base_args, run_main

from pruner_zero.allocation import Allocation, allocation_option
from pruner_zero.errors import ConfigError, MetricError
from pruner_zero.metric.io import format_formula, load_metric_file, resolve_metric
from pruner_zero.recipe import Recipe, load_recipe, merged, recipe_json, save_recipe

OWL_OBS = Recipe(Allocation("owl", 4.0, 0.05), "obs")
GIVEN = Recipe(Allocation("given", blocks=(0.4, 0.8), source="a.json"), None)


@pytest.mark.parametrize("recipe", [Recipe(), OWL_OBS, GIVEN, Recipe(update="obs")])
def test_a_recipe_round_trips_through_its_file(tmp_path, recipe):
    tree = resolve_metric("mul(abs(W), sqrt(X))")[1]
    path = tmp_path / "r.json"
    save_recipe(tree, recipe, path)
    back, found = load_recipe(path)
    assert format_formula(back) == format_formula(tree)
    assert (found or Recipe()) == recipe.checked()
    if recipe.plain:  # a plain recipe is a plain metric file, in the paper's format
        assert format_formula(load_metric_file(path)) == format_formula(tree)
        assert "allocation" not in json.loads(path.read_text())
    else:  # never read as a metric alone: its allocation and update would be lost silently
        with pytest.raises(MetricError, match="is a recipe file"):
            load_metric_file(path)
    assert len({r.tag() for r in (Recipe(), OWL_OBS)}) == 2
    # a uniform allocation has no OWL parameters: equal whatever was typed for them
    assert Allocation("uniform", owl_m=3.0).checked() == Allocation()
    assert Recipe(Allocation("uniform", owl_lambda=0.02)).checked().plain


def test_flags_may_repeat_a_recipe_file_but_not_contradict_it():
    assert merged(OWL_OBS, None, None) == OWL_OBS
    assert merged(OWL_OBS, Allocation("owl", 4.0, 0.05), "obs") == OWL_OBS
    assert merged(None, None, "obs") == Recipe(update="obs")
    with pytest.raises(ConfigError, match="contradicts"):
        merged(OWL_OBS, None, "none")
    with pytest.raises(ConfigError, match="contradicts"):
        merged(OWL_OBS, Allocation("uniform"), None)


@pytest.mark.parametrize("content, message", [
    ("[0.5, 1.0]", "in \\(0, 1\\)"), ("[]", "non-empty list"), ('{"a": 1}', "non-empty list"),
    ('["x", 0.5]', "in \\(0, 1\\)"), ("[0.5, true]", "in \\(0, 1\\)"), ("{", "JSON"),
])
def test_a_bad_allocation_file_is_one_error(tmp_path, content, message):
    path = tmp_path / "alloc.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        allocation_option(str(path))
    with pytest.raises(ConfigError, match="no such file"):
        allocation_option(str(tmp_path / "missing.json"))


def test_prune_with_a_recipe_file_reproduces_the_prune_with_flags(tiny_dir, capsys, tmp_path):
    flags = tmp_path / "flags.json"
    code, _, err = run_main(capsys, "prune", *base_args(
        tiny_dir, "--metric", "wanda", "--sparsity", "0.6", "--allocation", "owl",
        "--owl-lambda", "0.1", "--update", "obs", "--report", str(flags)))
    assert code == 0, err
    by_flags = json.loads(flags.read_text())
    recipe_file = tmp_path / "recipe.json"
    save_recipe(resolve_metric("wanda")[1], Recipe(Allocation("owl", owl_lambda=0.1), "obs"),
                recipe_file)
    by_file = tmp_path / "file.json"
    code, _, err = run_main(capsys, "prune", *base_args(
        tiny_dir, "--metric", str(recipe_file), "--sparsity", "0.6", "--report", str(by_file)))
    assert code == 0, err
    again = json.loads(by_file.read_text())
    assert again["ppl"] == by_flags["ppl"] and again["update"] == "obs"
    assert again["allocation"] == by_flags["allocation"]
    # the blocks OWL chose, given back as a file: the same masks, the same model
    given = tmp_path / "given.json"
    code, _, err = run_main(capsys, "prune", *base_args(
        tiny_dir, "--metric", "wanda", "--sparsity", "0.6", "--allocation", str(flags),
        "--update", "obs", "--report", str(given)))
    assert code == 0, err
    g = json.loads(given.read_text())
    assert g["ppl"] == by_flags["ppl"] and g["allocation"]["kind"] == "given"
    assert g["allocation"]["block_sparsity"] == by_flags["allocation"]["block_sparsity"]
    code, _, err = run_main(capsys, "prune", *base_args(
        tiny_dir, "--metric", str(recipe_file), "--sparsity", "0.6", "--update", "none"))
    assert code == 2 and "contradicts" in err


@pytest.mark.parametrize("blocks, sparsity, message", [
    ([0.5, 0.7, 0.6], "0.6", "the model has 2 decoder blocks"),
    ([0.5, 0.6], "0.6", "average 0.550000, not the requested sparsity 0.6"),
])
def test_a_given_allocation_that_does_not_fit_the_model_is_refused(tiny_dir, capsys, tmp_path,
                                                                   blocks, sparsity, message):
    path = tmp_path / "alloc.json"
    path.write_text(json.dumps(blocks))
    code, _, err = run_main(capsys, "prune", *base_args(
        tiny_dir, "--metric", "wanda", "--sparsity", sparsity, "--allocation", str(path)))
    assert code == 2 and err.startswith("error:") and message in err, err


def test_a_recipe_is_refused_where_a_metric_alone_is_meant(tmp_path):
    from pruner_zero.methods import metric_tree

    path = tmp_path / "r.json"
    save_recipe(resolve_metric("wanda")[1], OWL_OBS, path)
    with pytest.raises(MetricError, match="is a recipe"):
        metric_tree(str(path))
    assert recipe_json(resolve_metric("wanda")[1], OWL_OBS)["update"] == "obs"


def _recipe_search(tiny_dir, out, *extra):
    from conftest import protocol

    return ["search", *protocol(tiny_dir), "--space", "small", "--population", "6",
            "--generations", "1", "--gp-seed", "5", "--fitness-windows", "0", "--hof-size", "3",
            "--final-top", "2", "--polish", "0", "--confirm-seeds", "1", "--sparsity", "0.6",
            "--allocation", "owl", "--owl-lambda", "0.05", "--update", "obs",
            "--baselines", "wanda,sparsegpt", "--seed-metrics", "wanda", "--out", str(out),
            *extra]


def test_a_search_under_a_recipe_exports_it_and_prune_reproduces_its_number(tiny_dir, capsys):
    from conftest import checkpoint, protocol

    from pruner_zero.search.rundir import BASELINES, BEST_JSON, BEST_TXT, CONFIG
    from pruner_zero.search.stored import CONFIG_VERSION

    out = tiny_dir / "runs" / "recipe"
    assert run_main(capsys, *_recipe_search(tiny_dir, out))[0] == 0
    config = json.loads((out / CONFIG).read_text())
    assert config["version"] == CONFIG_VERSION and config["recipe"]["update"] == "obs"
    assert config["recipe"]["allocation"]["kind"] == "owl"
    best = json.loads((out / BEST_JSON).read_text())
    assert best["update"] == "obs" and best["allocation"]["owl_lambda"] == 0.05
    assert "recipe:    owl (M 5, λ 0.05) / update obs" in (out / BEST_TXT).read_text()
    assert "sparsegpt" in (out / BASELINES).read_text()
    final = checkpoint(out)["final"]
    reported = [r for r in final["report_rows"] if r["metric"] == final["best"]]
    assert len(reported) == 1
    code, stdout, err = run_main(capsys, "prune", *protocol(tiny_dir), "--metric", str(out),
                                 "--sparsity", "0.6", "--eval-windows",
                                 str(reported[0]["windows"]))
    assert code == 0, err
    assert json.loads(stdout.splitlines()[0])["ppl"] == reported[0]["ppl"]
    sparsegpt = [r for r in final["report_rows"] if r["metric"] == "sparsegpt"]
    code, stdout, err = run_main(capsys, "prune", *protocol(tiny_dir), "--metric", "sparsegpt",
                                 "--sparsity", "0.6", "--eval-windows",
                                 str(sparsegpt[0]["windows"]))
    assert code == 0 and json.loads(stdout.splitlines()[0])["ppl"] == sparsegpt[0]["ppl"]


def test_compare_prunes_each_metric_under_its_recipe_and_labels_it(tiny_dir, capsys, tmp_path):
    from conftest import protocol

    recipe_file = tmp_path / "recipe.json"
    save_recipe(resolve_metric("wanda")[1], Recipe(Allocation("owl", owl_lambda=0.05)),
                recipe_file)
    code, out, err = run_main(capsys, "compare", *protocol(tiny_dir), "--sparsity", "0.6",
                              "--metrics", f"wanda,sparsegpt,{recipe_file}", "--update", "obs",
                              "--seeds", "1", "--eval-windows", "4")
    assert code == 0, err
    assert "wanda [uniform / update obs]" in out and f"{recipe_file} [owl (M 5, λ 0.05)" in out
    assert "| sparsegpt |" in out.replace("  ", " ")
    ppl = {}
    for metric, flags in (("wanda", ["--update", "obs"]), (str(recipe_file), []),
                          ("sparsegpt", [])):
        code, stdout, err = run_main(capsys, "prune", *protocol(tiny_dir), "--metric", metric,
                                     "--sparsity", "0.6", "--eval-windows", "4", *flags)
        assert code == 0, err
        ppl[metric] = json.loads(stdout.splitlines()[0])["ppl"]
    for metric, value in ppl.items():  # the leaderboard's numbers are the prunes'
        assert f"{value:.4f}" in out, (metric, value, out)


def _genome_search(tiny_dir, out, *extra):
    from conftest import protocol

    return ["search", *protocol(tiny_dir), "--space", "small", "--population", "8",
            "--generations", "2", "--gp-seed", "4", "--fitness-windows", "0", "--hof-size", "4",
            "--final-top", "2", "--polish", "1", "--confirm-seeds", "1", "--sparsity", "0.6",
            "--recipe-space", "uniform/none, uniform/obs,owl:5:0.05/obs,uniform/obs",
            "--baselines", "wanda,sparsegpt", "--seed-metrics", "wanda", "--out", str(out),
            *extra]


def test_a_recipe_genome_search_exports_the_best_recipe_that_prune_reproduces(tiny_dir, capsys):
    from conftest import checkpoint, protocol

    from pruner_zero.search.candidate import parse_candidate
    from pruner_zero.search.rundir import BEST_JSON, CONFIG, EVALUATIONS

    out = tiny_dir / "runs" / "genome"
    code, _, err = run_main(capsys, *_genome_search(tiny_dir, out))
    assert code == 0, err
    config = json.loads((out / CONFIG).read_text())
    assert config["gp"]["recipe_space"] == ["uniform/none", "uniform/obs", "owl:5:0.05/obs"]
    records = [json.loads(line) for line in (out / EVALUATIONS).read_text().splitlines()]
    tags = {r["formula"].partition(" @ ")[2] for r in records}
    assert len(tags) >= 2 and tags <= {"uniform/none", "uniform/obs", "owl:5:0.05/obs"}
    # an equal metric under two recipes is two candidates: its keys differ
    keys = {r["key"] for r in records if r["key"]}
    assert all(" @ " in k for k in keys)
    final = checkpoint(out)["final"]
    best = parse_candidate(final["best"])
    exported = json.loads((out / BEST_JSON).read_text())
    recipe = best.recipe
    assert (exported.get("update", "none"), exported.get("allocation", {}).get("kind", "uniform")) \
        == (recipe.update or "none", recipe.allocation.kind)
    reported = [r for r in final["report_rows"] if r["metric"] == final["best"]]
    code, stdout, err = run_main(capsys, "prune", *protocol(tiny_dir), "--metric", str(out),
                                 "--sparsity", "0.6", "--eval-windows",
                                 str(reported[0]["windows"]))
    assert code == 0, err
    assert json.loads(stdout.splitlines()[0])["ppl"] == reported[0]["ppl"]
    # a finished run resumed rewrites the same outputs from its checkpoint
    before = (out / BEST_JSON).read_text()
    (out / BEST_JSON).unlink()
    assert run_main(capsys, "search", "--resume", str(out), "--quiet")[0] == 0
    assert (out / BEST_JSON).read_text() == before


def test_caches_on_or_off_give_the_same_recipe_genome_search(tiny_dir, capsys):
    from conftest import checkpoint, hall_of_fame

    on, off = tiny_dir / "runs" / "g-on", tiny_dir / "runs" / "g-off"
    assert run_main(capsys, *_genome_search(tiny_dir, on))[0] == 0
    assert run_main(capsys, *_genome_search(tiny_dir, off, "--no-canonical-cache",
                                            "--no-fingerprint-cache"))[0] == 0
    assert hall_of_fame(on) == hall_of_fame(off)
    assert checkpoint(on)["final"] == checkpoint(off)["final"]
    assert checkpoint(on)["population"] == checkpoint(off)["population"]


def test_recipe_genes_are_crossed_and_mutated_with_the_tree():
    import random

    from pruner_zero.metric.space import load_space
    from pruner_zero.recipe import parse_tag
    from pruner_zero.search.candidate import candidate_key, candidate_text, parse_candidate
    from pruner_zero.search.operators import build_toolbox

    space = load_space("small")
    recipes = [parse_tag("uniform/none"), parse_tag("uniform/obs")]
    tb = build_toolbox(space, 3, 6, 30, recipes)
    a = parse_candidate("mul(W, X) @ uniform/none")
    b = parse_candidate("abs(W) @ uniform/obs")
    assert candidate_key(a) != candidate_key(parse_candidate("mul(W, X) @ uniform/obs"))
    random.seed(0)
    seen = set()
    for _ in range(50):
        (m,) = tb.mutate(tb.clone(a))
        seen.add(m.recipe.tag())
    assert seen == {"uniform/none", "uniform/obs"}  # a mutation may change the recipe gene
    swapped = 0
    for _ in range(40):
        x, y = tb.mate(tb.clone(a), tb.clone(b))
        swapped += x.recipe != a.recipe
        assert {x.recipe, y.recipe} == {a.recipe, b.recipe}
    assert 0 < swapped < 40
    assert candidate_text(parse_candidate("mul(W, X)")) == "mul(W, X)"


@pytest.mark.parametrize("space, message", [
    ("uniform", "ALLOCATION/UPDATE"), ("owl:5/obs", "ALLOCATION/UPDATE"),
    ("uniform/sgd", "--update must be none, obs, sweep, lsq or sweep-lsq"), (",", "must list recipes"),
])
def test_a_bad_recipe_space_is_one_error_before_any_work(tiny_dir, capsys, space, message):
    code, _, err = run_main(capsys, *_genome_search(tiny_dir, tiny_dir / "runs" / "bad",
                                                    "--recipe-space", space))
    assert code == 2 and err.startswith("error:") and message in err, err
    code, _, err = run_main(capsys, *_genome_search(tiny_dir, tiny_dir / "runs" / "bad2"),
                            "--update", "obs")
    assert code == 2 and "leave --allocation and --update out" in err, err


def test_a_tag_reads_back_exactly():
    from pruner_zero.recipe import parse_tag

    for tag in ("uniform/none", "uniform/obs", "owl:5:0.04/obs", "owl:3.5:0.04000001/none"):
        assert parse_tag(tag).tag() == tag
    assert parse_tag("owl/obs").tag() == "owl:5:0.08/obs"


def test_the_same_masks_with_and_without_the_update_are_two_results(tiny_dir):
    """A fingerprint carries the update: identical masks under none and obs never share a
    cache entry, and each gives what its own prune gives."""
    from pruner_zero.masks import Structure
    from pruner_zero.measure import TaskBenches
    from pruner_zero.recipe import parse_tag
    from pruner_zero.runtime import Runtime
    from pruner_zero.search.candidate import parse_candidate
    from pruner_zero.search.fitness import FitnessEvaluator
    from pruner_zero.tasks import Task

    task = Task(model=str(tiny_dir / "tiny-llama"), sparsity=0.6, data_dir=str(tiny_dir / "data"),
                calib_split="train", nsamples=2, seqlen=16, name="t")
    benches = TaskBenches(Runtime(device="cpu"), None, False, lambda m: None)
    bench = benches.bench(task)
    ev = FitnessEvaluator(bench, Structure(0.6), fitness_windows=4,
                          engine=benches.engine(task, task.seed),
                          engines=lambda r: benches.engine(task, task.seed, "row", r))
    plain = ev.evaluate(parse_candidate("mul(W, sqrt(X)) @ uniform/none"))
    updated = ev.evaluate(parse_candidate("mul(W, sqrt(X)) @ uniform/obs"))
    assert updated.cached is None and plain.fingerprint != updated.fingerprint
    assert plain.fingerprint.startswith(updated.fingerprint.split(" @ ")[0])  # the same masks
    assert plain.fitness != updated.fitness
    for recipe, result in (("uniform/none", plain), ("uniform/obs", updated)):
        ppl = benches.ppl_on(task, task.seed, parse_candidate("mul(W, sqrt(X))"), ev.windows,
                             recipe=parse_tag(recipe))
        assert ppl == result.fitness


@pytest.mark.parametrize("extra, message", [
    (["--structure", "2:4", "--sparsity", "0.5", "--recipe-space", "uniform/none,owl/obs"],
     "fixes every block's"),
    (["--recipe-space", "uniform/none,owl:5:0.4/obs"], "outside (0, 1)"),
    (["--recipe-space", "uniform/none,owl/obs", "--owl-m", "3"], "owl:M:LAMBDA"),
    (["--allocation", "uniform", "--owl-lambda", "0.1"], "give --allocation owl"),
])
def test_an_impossible_recipe_is_refused_before_the_search_starts(tiny_dir, capsys, extra,
                                                                    message):
    from pruner_zero.search.rundir import EVALUATIONS

    out = tiny_dir / "runs" / "impossible"
    args = _genome_search(tiny_dir, out, *extra)
    if "--allocation" in extra:  # no recipe space: the run's one recipe
        i = args.index("--recipe-space")
        del args[i:i + 2]
    code, _, err = run_main(capsys, *args)
    last = err.strip().splitlines()[-1]  # after the statistics' line, when the model loaded
    assert code == 2 and last.startswith("error:") and message in last, err
    assert not (out / EVALUATIONS).is_file() or not (out / EVALUATIONS).read_text()
