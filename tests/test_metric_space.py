"""Search spaces from YAML and their DEAP primitive sets."""

import random

import pytest
from deap import gp

from pruner_zero.errors import MetricError
from pruner_zero.metric.io import parse_formula
from pruner_zero.metric.space import SearchSpace, full_pset, load_space
from pruner_zero.metric.tree import label, leaves

from conftest import BINARY, UNARY


PAPER_UNARY = tuple(n for n in UNARY if n not in ("rown", "coln"))  # the two are ours (RIA's)


def test_paper_space():
    space = load_space("paper")
    assert space.name == "paper"
    assert space.terminals == ("W", "G", "X")
    assert space.unary_ops == PAPER_UNARY and space.binary_ops == tuple(BINARY)
    assert (space.init_min_depth, space.init_max_depth) == (2, 4)
    assert space.max_height >= space.init_max_depth and space.max_size > 0
    pset = space.pset()
    assert pset is space.pset()  # cached
    assert pset.name == "metric" and pset.arguments == ["W", "G", "X"]
    assert {p.name for p in pset.primitives[pset.ret]} == set(PAPER_UNARY) | set(BINARY)
    assert {label(t) for t in pset.terminals[pset.ret]} == {"W", "G", "X"}
    extended = load_space("extended")
    assert extended.unary_ops == tuple(UNARY) and extended.binary_ops == tuple(BINARY)


def test_small_space_and_full_pset():
    small = load_space("small")
    assert set(small.ops) < set(UNARY) | set(BINARY)
    assert small.init_max_depth <= small.max_height
    assert {p.name for p in full_pset().primitives[full_pset().ret]} == set(UNARY) | set(BINARY)


def test_space_from_path_without_x(tmp_path):
    path = tmp_path / "wg.yaml"
    path.write_text("terminals: [W, G]\nunary_ops: [abs]\nbinary_ops: [mul, add]\n"
                    "init_min_depth: 1\ninit_max_depth: 3\nmax_height: 5\nmax_size: 20\n")
    space = load_space(str(path))
    assert space.name == "wg"
    pset = space.pset()
    assert pset.arguments == ["W", "G"]
    random.seed(0)
    for _ in range(30):
        assert "X" not in leaves(gp.PrimitiveTree(gp.genHalfAndHalf(pset, 1, 3)))
    with pytest.raises(MetricError, match="unknown terminal 'X'"):
        parse_formula("mul(W, X)", pset)


GOOD = {"terminals": "[W, G, X]", "unary_ops": "[abs]", "binary_ops": "[mul]", "init_min_depth": "1",
        "init_max_depth": "2", "max_height": "4", "max_size": "10"}


@pytest.mark.parametrize("change, message", [
    ({"unary_ops": "[abs, foo]"}, "unknown unary op 'foo'"),
    ({"binary_ops": "[abs]"}, "unknown binary op 'abs'"),
    ({"terminals": "[W, Y]"}, "unknown terminal 'Y'"),
    ({"terminals": "W"}, "'terminals' must be a list"),
    ({"colour": "red"}, "unknown field"),
    ({"max_size": None}, "missing field.*max_size"),
    ({"init_min_depth": "3"}, r"init_min_depth \(3\) exceeds init_max_depth"),
    ({"max_height": "1"}, "exceeds max_height"),
    ({"max_size": "-2"}, "non-negative integer"),
    ({"unary_ops": "[]", "binary_ops": "[]"}, "at least one"),
    ({"max_size": "1"}, r"max_size \(1\) is below the 7 nodes"),  # else gen 0 ignores it
])
def test_bad_space_files(tmp_path, change, message):
    fields = {**GOOD, **change}
    path = tmp_path / "bad.yaml"
    path.write_text("".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None))
    with pytest.raises(MetricError, match=message):
        load_space(path)


def test_unknown_space_and_unreadable_files(tmp_path):
    with pytest.raises(MetricError, match="unknown search space 'nope'; available: .*paper"):
        load_space("nope")
    with pytest.raises(MetricError, match="search space file not found"):
        load_space(str(tmp_path / "missing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("terminals: [W, G\n")
    with pytest.raises(MetricError, match="broken.yaml is not valid YAML"):
        load_space(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- W\n- G\n")
    with pytest.raises(MetricError, match="YAML mapping"):
        load_space(listy)


def test_space_constructor_validates():
    with pytest.raises(MetricError, match="not a string"):
        SearchSpace("s", "WG", ("abs",), (), 1, 2, 3, 4)


@pytest.mark.parametrize("content, message", [
    ("[" * 5000 + "]" * 5000, "nested too deeply"),
    (b"name: \xff\n", "not UTF-8"),
])
def test_unreadable_space_files_are_one_metric_error(tmp_path, content, message):
    from pruner_zero.errors import MetricError
    from pruner_zero.metric.space import load_space

    path = tmp_path / "space.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MetricError, match=message):
        load_space(path)
