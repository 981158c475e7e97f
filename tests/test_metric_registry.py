"""The registry is the one place an op or terminal is declared: the paper's ops, their forms
agree, their sign facts hold, and a toy op or terminal registered at runtime works everywhere
(search, export, parse, sympy, prune) with no other file touched."""
from __future__ import annotations

import json
import math
import random

import pytest
import sympy
import torch

from conftest import BINARY, UNARY
from pruner_zero.metric import registry
from pruner_zero.metric.io import format_formula, load_metric_file, parse_formula
from pruner_zero.metric.simplify import simplify
from pruner_zero.metric.symbolic import to_latex, to_sympy

EDGES = [0.0, -0.0, 1e-4, -0.5, 0.3, 1.0, -3.0, 7.5, 99.0, 150.0, -150.0]
LAYER_WIDE = {"mms", "zsn", "rown", "coln"}  # over the layer, a row or a column: no scalar meaning


def _sympy_value(op: registry.Op, args: list[float]) -> float:
    return float(sympy.N(op.sympy([sympy.Float(a) for a in args], 0)))


def test_op_tables_have_the_paper_ops_and_the_paper_space_exactly_them():
    from pruner_zero.metric.space import load_space

    paper = ["sqr", "neg", "abs", "log", "exp", "sqrt", "tanh", "pow", "skp", "mms", "zsn"]
    assert list(UNARY) == paper + ["rown", "coln"]  # beyond the paper: RIA's relative importance
    assert list(BINARY) == ["add", "sub", "mul", "div"]
    assert {n: o.arity for n, o in registry.OPS.items()} == \
        {**{k: 1 for k in UNARY}, **{k: 2 for k in BINARY}}
    space = load_space("paper")
    assert list(space.unary_ops) == paper and list(space.binary_ops) == list(BINARY)
    assert list(load_space("extended").unary_ops) == list(UNARY)


@pytest.mark.parametrize("name", [n for n in registry.OPS if n not in LAYER_WIDE])
def test_each_ops_torch_float_and_sympy_forms_agree(name):
    op = registry.op(name)
    rng = random.Random(name)
    values = EDGES + [rng.uniform(-20, 20) for _ in range(30)]
    cases = [[x] for x in values] if op.arity == 1 else \
        [[x, y] for x in values[:12] for y in values[:12]] + [[rng.uniform(-5, 5), rng.uniform(-5, 5)]
                                                             for _ in range(30)]
    for args in cases:
        want = float(op.torch(*[torch.tensor(a, dtype=torch.float64) for a in args]))
        folded = op.fold(*args) if op.fold is not None else None
        if not math.isfinite(want):  # e.g. div by 0: OOS never folds what is not finite
            continue
        assert folded == pytest.approx(want, rel=1e-12, abs=1e-12), (name, args)
        assert _sympy_value(op, args) == pytest.approx(want, rel=1e-9, abs=1e-12), (name, args)


def test_layer_wide_ops_have_sympy_forms_and_no_fold():
    for name in LAYER_WIDE:
        op = registry.op(name)
        assert op.fold is None and op.arity == 1
        assert str(to_sympy(parse_formula(f"{name}(W)"))).lower().startswith(name)


def test_sign_facts_hold_on_random_inputs():
    """An op declared non-negative always / for non-negative arguments is so on random data."""
    g = torch.Generator().manual_seed(0)
    signed, nonneg = torch.randn(200, dtype=torch.float64, generator=g), torch.rand(200, dtype=torch.float64, generator=g)
    for name, op in registry.OPS.items():
        args = [nonneg] * op.arity
        if op.nonneg == registry.ALWAYS:
            assert bool((op.torch(*[signed] * op.arity) >= 0).all()), name
        if op.nonneg in (registry.ALWAYS, registry.IF_FIRST, registry.IF_ALL):
            out = op.torch(nonneg, signed) if op.nonneg == registry.IF_FIRST and op.arity == 2 \
                else op.torch(*args)
            assert bool((out >= 0).all()), name


# ----------------------------------------------------------------- toy op and terminal
@pytest.fixture
def cube():
    registry.register_op(registry.Op("cube", 1, lambda x: x * x * x, lambda a, c: a[0] ** 3,
                                     lambda x: x ** 3, registry.IF_FIRST, "x³"))
    yield "cube"
    registry.unregister("cube")


def test_a_toy_op_is_one_registry_entry(cube, tiny_dir, tmp_path, capsys):
    from pruner_zero.cli import main

    tree = parse_formula("mul(cube(W), X)")
    assert format_formula(tree) == "mul(cube(W), X)"
    assert to_sympy(tree) == registry.symbol("W") ** 3 * registry.symbol("X")
    assert to_latex(tree) == "W^{3} X"
    assert format_formula(simplify(parse_formula("cube(add(1, 1))"))) == "8"  # folded
    space = tmp_path / "cube.yaml"
    space.write_text("name: cube\nterminals: [W, X]\nunary_ops: [cube, sqrt]\nbinary_ops: [mul]\n"
                     "init_min_depth: 1\ninit_max_depth: 2\nmax_height: 4\nmax_size: 12\n")
    out = tmp_path / "run"
    code = main(["search", "--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
                 "--seqlen", "16", "--nsamples", "2", "--device", "cpu", "--no-cache", "--quiet",
                 "--space", str(space), "--generations", "1", "--population", "6",
                 "--seed-metrics", "mul(cube(W), X)", "--final-top", "1", "--confirm-seeds", "1",
                 "--baselines", "", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in (out / "evaluations.jsonl").read_text().splitlines()]
    assert any("cube(" in r["formula"] and r["status"] == "ok" for r in records)
    best = load_metric_file(out / "best_metric.json")
    assert format_formula(best) == json.loads(capsys.readouterr().out)["best"]
    to_sympy(best)  # every exported metric of the space sympifies


def test_a_toy_terminal_is_one_registry_entry(tiny_dir):
    """A = |W|·X per weight, once as a statistic the test gives every layer, once derived from
    W and X: pruning with A prunes exactly as pruning with mul(W, X)."""
    from pruner_zero.pruning import prune
    from pruner_zero.workbench import Protocol, Workbench

    registry.register_terminal(registry.Terminal("A", registry.MATRIX, statistic="A"))
    registry.register_terminal(registry.Terminal("B", registry.MATRIX, derive=lambda v: v["W"] * v["X"],
                                                 needs=("W", "X")))
    try:
        bench = Workbench(Protocol(model=str(tiny_dir / "tiny-llama"), data_dir=str(tiny_dir / "data"),
                                   nsamples=2, seqlen=16, device="cpu"), progress=False,
                          log=lambda *_: None)
        for name, lin in bench.linears.items():
            bench.stats[name]["A"] = lin.weight.detach().abs() * bench.stats[name]["X"].view(1, -1)
        dense = {n: m.weight.detach().clone() for n, m in bench.linears.items()}
        reports, zeros = {}, {}
        for metric in ("mul(W, X)", "A", "mul(B, 1)"):
            reports[metric] = prune(bench, metric, dense=False, log=lambda *_: None)
            zeros[metric] = {n: m.weight == 0 for n, m in bench.linears.items()}
            for n, m in bench.linears.items():
                m.weight.data.copy_(dense[n])
        assert reports["A"]["ppl"] == reports["mul(W, X)"]["ppl"] == reports["mul(B, 1)"]["ppl"]
        for metric in ("A", "mul(B, 1)"):
            assert all(torch.equal(zeros[metric][n], zeros["mul(W, X)"][n]) for n in dense)
        assert registry.statistics_read({"B", "G"}) == {"X", "G"}
        assert to_sympy(parse_formula("mul(A, G)")) == registry.symbol("A") * registry.symbol("G")
    finally:
        registry.unregister("A")
        registry.unregister("B")
    with pytest.raises(Exception, match="unknown"):
        parse_formula("A")
