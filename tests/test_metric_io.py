"""Formula text, paper JSON and metric files."""

import json
import random

import pytest
import torch
from deap import gp

from pruner_zero.errors import MetricError
from pruner_zero.metric.builtin import BUILTINS
from pruner_zero.metric.io import (format_formula, from_paper_json, load_metric_file, parse_formula,
                                   resolve_metric, save_metric_json, to_paper_json)
from pruner_zero.metric.space import load_space
from conftest import PAPER_FORMULA, PAPER_JSON, scores_of


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(16, 8, generator=g).abs(), torch.rand(16, 8, generator=g),
            torch.rand(8, generator=g))


def test_paper_json_formula_and_hand_written_torch_agree():
    W, G, X = _inputs()
    from_json = scores_of(from_paper_json(json.loads(PAPER_JSON)), W, G, X)
    from_text = scores_of(parse_formula(PAPER_FORMULA), W, G, X)
    by_hand = (W * W).abs() * (G - G.min()) / (G.max() - G.min())
    assert torch.equal(from_json, from_text)
    torch.testing.assert_close(from_text, by_hand)
    assert format_formula(from_paper_json(json.loads(PAPER_JSON))) == PAPER_FORMULA


@pytest.mark.parametrize("formula", [
    PAPER_FORMULA, "W", "mul(W, add(sqrt(X), mul(100, G)))", "add(mul(-2, W), 0.5)",
    "div(zsn(X), exp(tanh(1e-05)))", "sub(pow(skp(G)), neg(log(W)))",
])
def test_round_trips(formula):
    tree = parse_formula(formula)
    text = format_formula(tree)
    assert format_formula(parse_formula(text)) == text
    back = from_paper_json(json.loads(json.dumps(to_paper_json(tree))))
    assert format_formula(back) == text
    W, G, X = _inputs(1)
    assert torch.equal(scores_of(back, W, G, X), scores_of(tree, W, G, X))


def test_random_trees_round_trip():
    pset = load_space("paper").pset()
    random.seed(3)
    for _ in range(50):
        tree = gp.PrimitiveTree(gp.genHalfAndHalf(pset, 1, 5))
        assert format_formula(parse_formula(str(tree))) == str(tree)
        assert format_formula(from_paper_json(to_paper_json(tree))) == str(tree)


def test_constants_are_floats_and_json_text():
    tree = parse_formula("mul(100, W)")
    assert tree[1].value == 100.0 and isinstance(tree[1].value, float)
    assert to_paper_json(tree) == {"data": "mul", "left": {"data": "100"}, "right": {"data": "W"}}
    # The original repository stored integer constants as JSON numbers.
    assert format_formula(from_paper_json({"data": "mul", "left": {"data": 3}, "right": {"data": "G"}})) \
        == "mul(3, G)"


@pytest.mark.parametrize("text, message", [
    ("foo(W)", "unknown op 'foo'.*known ops: sqr, neg"),
    ("mul(W)", r"wrong number of arguments for 'mul'.*expects 2, got 1"),
    ("abs(W, G)", r"expects 1, got 2"),
    ("mul(W, Y)", "unknown terminal 'Y' at position 7"),
    ("mul(W, G", "unbalanced parentheses"),
    ("mul(W, G))", "unbalanced parentheses: unexpected '\\)'"),
    ("mul(W, G) W", "trailing text"),
    ("", "empty"),
    ("   ", "empty"),
    ("abs", "needs its arguments"),
    ("W(G)", "is a terminal, not an op"),
    ("mul(W; G)", "unexpected character ';'"),
    ("mul(W,)", "expected an op, terminal or number"),
])
def test_bad_formulas_raise_metric_error(text, message):
    with pytest.raises(MetricError, match=message):
        parse_formula(text)


def test_parse_respects_the_given_pset():
    small = load_space("small").pset()
    assert str(parse_formula("mms(mul(W, G))", small)) == "mms(mul(W, G))"
    with pytest.raises(MetricError, match="unknown op 'zsn'"):
        parse_formula("zsn(W)", small)


@pytest.mark.parametrize("obj, message", [
    ({"data": "foo", "left": {"data": "W"}}, "unknown op or terminal 'foo'"),
    ({"data": "mul", "left": {"data": "W"}}, "binary op 'mul' needs exactly"),
    ({"data": "abs"}, "unary op 'abs' needs exactly"),
    ({"data": "abs", "left": {"data": "W"}, "right": {"data": "G"}}, "unary op 'abs'"),
    ({"data": "W", "left": {"data": "G"}}, "must not have children"),
    (["mul"], "must be an object"),
    ({"data": "mul", "left": "W", "right": {"data": "G"}}, r"at root\.left must be an object"),
    ({"left": {"data": "W"}}, "no 'data' key"),
    ({"data": "W", "colour": "red"}, "unknown key"),
    ({"data": None}, "'data' must be"),
    ({"data": "nan"}, "unknown op or terminal 'nan'"),
])
def test_bad_paper_json_raises_metric_error(obj, message):
    with pytest.raises(MetricError, match=message):
        from_paper_json(obj)


def test_metric_files(tmp_path):
    tree = parse_formula("mul(W, add(sqrt(X), mul(100, G)))")
    path = tmp_path / "sub" / "best_tree.json"
    save_metric_json(tree, path)
    assert str(load_metric_file(path)) == str(tree)
    assert json.loads(path.read_text())["data"] == "mul"

    formula_file = tmp_path / "f.json"
    formula_file.write_text(json.dumps({"formula": PAPER_FORMULA}))
    assert str(load_metric_file(formula_file)) == PAPER_FORMULA

    paper_file = tmp_path / "paper.json"
    paper_file.write_text(PAPER_JSON)
    assert resolve_metric(str(paper_file)) == (str(paper_file), load_metric_file(paper_file))


def test_bad_metric_files(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(MetricError, match="metric file not found: .*nope.json"):
        load_metric_file(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MetricError, match=r"broken.json is not valid JSON"):
        load_metric_file(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"data": "mul", "left": {"data": "W"}}))
    with pytest.raises(MetricError, match=r"wrong.json: .*binary op 'mul'"):
        load_metric_file(wrong)
    bad_formula = tmp_path / "bad_formula.json"
    bad_formula.write_text(json.dumps({"formula": "mul(W)"}))
    with pytest.raises(MetricError, match="bad_formula.json: .*wrong number of arguments"):
        load_metric_file(bad_formula)


def test_resolve_metric():
    for name, formula in BUILTINS.items():
        display, tree = resolve_metric(name)
        assert display == name and str(tree) == formula
    display, tree = resolve_metric(" mul( G ,W) ")
    assert display == "mul(G, W)" == str(tree)
    with pytest.raises(MetricError, match="metric file not found: missing.json"):
        resolve_metric("missing.json")
    with pytest.raises(MetricError, match="metric file not found: some/dir/tree"):
        resolve_metric("some/dir/tree")
    with pytest.raises(MetricError, match="unknown metric 'wandaa'.*built-in"):
        resolve_metric("wandaa")
    with pytest.raises(MetricError, match="empty"):
        resolve_metric("")


# ------------------------------------------------------------ hardening: input limits and rules

def test_a_file_named_like_a_formula_never_replaces_the_formula(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "W").write_text('{"formula": "G"}')
    (tmp_path / "mul(W, G)").write_text('{"formula": "X"}')
    assert format_formula(resolve_metric("W")[1]) == "W"
    assert format_formula(resolve_metric("mul(W, G)")[1]) == "mul(W, G)"
    # asked for as a file (@path), the same files are read
    assert format_formula(resolve_metric("@W")[1]) == "G"
    assert format_formula(resolve_metric("@mul(W, G)")[1]) == "X"
    # text that is no formula but an existing file is still read as one
    (tmp_path / "my-metric").write_text('{"formula": "mul(W, X)"}')
    assert format_formula(resolve_metric("my-metric")[1]) == "mul(W, X)"


def test_a_formula_too_long_for_a_file_name_is_parsed_not_probed_as_a_path():
    long = "add(" * 60 + "W" + ", W)" * 60  # 301 characters: the file system's limit is 255
    assert len(long) > 255
    assert format_formula(resolve_metric(long)[1]) == long
    with pytest.raises(MetricError, match="metric file not found"):
        resolve_metric("x" * 300 + ".json")


@pytest.mark.parametrize("text, message", [
    ("add(" * 1200 + "W" + ", W)" * 1200, "characters long; the limit is 4000"),
    ("abs(" * 300 + "W" + ")" * 300, "nested more than 64 levels"),
    ("mul(W, 1e13)", r"larger than 1e\+12"),
    ("mul(W, " + "1" * 40 + ")", "the limit is 32"),
])
def test_formula_limits_are_named_in_one_error(text, message):
    with pytest.raises(MetricError, match=message) as info:
        resolve_metric(text)
    assert len(str(info.value)) < 300  # the formula is quoted by its start, not whole


def test_metric_json_nested_thousands_deep_is_a_metric_error(tmp_path):
    node = {"data": "W"}
    text = json.dumps(node)
    for _ in range(5000):
        text = '{"data": "abs", "left": ' + text + "}"
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(MetricError, match="nested 5001 levels deep"):
        resolve_metric(str(path))


def test_metric_json_constants_obey_the_same_limits():
    with pytest.raises(MetricError, match="larger than"):
        from_paper_json({"data": "mul", "left": {"data": "W"}, "right": {"data": 1e300}})
    with pytest.raises(MetricError, match="finite"):
        from_paper_json({"data": "mul", "left": {"data": "W"}, "right": {"data": float("inf")}})


def test_metric_lists_with_unbalanced_parentheses_are_refused_not_truncated():
    from pruner_zero.metric.io import split_metric_list

    assert split_metric_list("wanda, mul(W, G) ,gblm") == ["wanda", "mul(W, G)", "gblm"]
    with pytest.raises(MetricError, match=r"--seed-metrics: unbalanced parentheses, 1 '\('"):
        split_metric_list("wanda,mul(W, G", "--seed-metrics")
    with pytest.raises(MetricError, match=r"closes nothing"):
        split_metric_list("wanda),mul(W, G)", "--baselines")
