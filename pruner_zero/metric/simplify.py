"""Opposing-operation simplification (OOS): shrink metric trees by rewriting.

Rewrites run bottom-up to a fixpoint on an immutable copy of the tree.  Every
rule strictly shrinks the subtree it replaces, so the result is never larger
and strictly smaller whenever a rule fired.

EXACT rules keep every score (up to float rounding), given the contract of
``score_metric``: W, G, X >= 0.  APPROXIMATE rules (``approximate=True``) ignore
log's ``+1e-3`` and exp's clamp at 100.

Broadcasting matters: X alone is a row [1, in], and ``div`` (Frobenius norm)
and the ops that read their operand's shape (``zsn``'s unbiased std, ``rown``/``coln``'s sums)
depend on how many elements their operand has.
A rule that replaces a subtree by a scalar (e.g. ``sub(W, W) -> 0``) is
therefore only applied where no such op sees the smaller shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable

from deap import gp

from pruner_zero.metric import registry
from pruner_zero.metric.space import full_pset
from pruner_zero.metric.tree import Constant, is_constant, label

FOLDABLE = ("*foldable",)
"""The roots of the fold rule: every op the registry gives a float function."""


@dataclass(frozen=True)
class Node:
    """Immutable tree node; equality is structural (op, args, constant value)."""

    op: str
    args: tuple["Node", ...] = ()
    value: float | None = None
    size: int = field(default=1, compare=False)
    cls: int = field(default=0, compare=False)
    nonneg: bool = field(default=False, compare=False)


def term(name: str) -> Node:
    """A terminal leaf (W, G, X, ...): its shape class and sign from the registry."""
    t = registry.terminal(name)
    return Node(name, (), None, 1, t.shape, t.nonneg)


def const(value: float) -> Node:
    """A constant leaf (-0.0 normalised to 0.0)."""
    value = float(value) + 0.0
    return Node(Constant(value).name, (), value, 1, 0, value >= 0)


def mk(op: str, *args: Node) -> Node:
    """An op node, with size, shape class and non-negativity derived from its args."""
    fact = registry.op(op).nonneg
    nonneg = (fact == registry.ALWAYS or (fact == registry.IF_FIRST and args[0].nonneg)
              or (fact == registry.IF_ALL and all(a.nonneg for a in args)))
    return Node(op, args, None, 1 + sum(a.size for a in args), max(a.cls for a in args), nonneg)


def _is(n: Node, *ops: str) -> bool:
    return n.op in ops and bool(n.args)


def _is_const(n: Node, value: float | None = None) -> bool:
    return n.value is not None and (value is None or n.value == value)


# ------------------------------------------------------------------- rules

@dataclass(frozen=True)
class Rule:
    """One rewrite; ``example`` is a formula on which it fires (used by tests and docs)."""

    name: str
    before: str
    after: str
    exact: bool
    reason: str
    roots: tuple[str, ...]
    example: str
    apply: Callable[[Node], Node | None] = field(compare=False, repr=False)


RULES: list[Rule] = []
"""Every rule, in the order tried at a node."""


def _rule(name: str, before: str, after: str, roots: Iterable[str], example: str, reason: str,
          exact: bool = True) -> Callable[[Callable[[Node], Node | None]], Callable[[Node], Node | None]]:
    def register(fn: Callable[[Node], Node | None]) -> Callable[[Node], Node | None]:
        RULES.append(Rule(name, before, after, exact, reason, tuple(roots), example, fn))
        return fn
    return register


@_rule("neg-neg", "neg(neg(x))", "x", ["neg"], "neg(neg(log(W)))", "negation is its own inverse")
def _neg_neg(n: Node) -> Node | None:
    return n.args[0].args[0] if _is(n.args[0], "neg") else None


@_rule("abs-abs", "abs(abs(x))", "abs(x)", ["abs"], "abs(abs(sub(W, G)))", "abs is idempotent")
def _abs_abs(n: Node) -> Node | None:
    return n.args[0] if _is(n.args[0], "abs") else None


@_rule("abs-neg", "abs(neg(x))", "abs(x)", ["abs"], "abs(neg(log(W)))", "abs ignores the sign")
def _abs_neg(n: Node) -> Node | None:
    return mk("abs", n.args[0].args[0]) if _is(n.args[0], "neg") else None


@_rule("abs-nonneg", "abs(x), x >= 0", "x", ["abs"], "abs(mul(W, sqrt(X)))",
       "x is provably non-negative (W, G, X, sqr, sqrt, exp, mms, sums/products of those, ...)")
def _abs_nonneg(n: Node) -> Node | None:
    return n.args[0] if n.args[0].nonneg else None


@_rule("sqrt-sqr", "sqrt(sqr(x)), sqrt(pow(x))", "abs(x)", ["sqrt"], "sqrt(sqr(sub(W, G)))",
       "the square root undoes the square up to sign")
def _sqrt_sqr(n: Node) -> Node | None:
    return mk("abs", n.args[0].args[0]) if _is(n.args[0], "sqr", "pow") else None


@_rule("sqr-sqrt", "sqr(sqrt(x)), pow(sqrt(x))", "abs(x)", ["sqr", "pow"], "sqr(sqrt(sub(W, G)))",
       "the square undoes sqrt(|x|)")
def _sqr_sqrt(n: Node) -> Node | None:
    return mk("abs", n.args[0].args[0]) if _is(n.args[0], "sqrt") else None


@_rule("sqr-sign", "sqr(neg(x)), sqr(abs(x)) (also pow)", "sqr(x)", ["sqr", "pow"],
       "sqr(neg(log(W)))", "squaring ignores the sign")
def _sqr_sign(n: Node) -> Node | None:
    return mk(n.op, n.args[0].args[0]) if _is(n.args[0], "neg", "abs") else None


@_rule("abs-inside", "sqrt/log(neg(x)), sqrt/log(abs(x))", "sqrt/log(x)", ["sqrt", "log"],
       "log(neg(log(W)))", "sqrt and log already take |x|")
def _abs_inside(n: Node) -> Node | None:
    return mk(n.op, n.args[0].args[0]) if _is(n.args[0], "neg", "abs") else None


@_rule("skp", "skp(x)", "x", ["skp"], "mul(skp(W), G)", "skp is the identity")
def _skp(n: Node) -> Node | None:
    return n.args[0]


@_rule("mul-self", "mul(x, x)", "sqr(x)", ["mul"], "mul(sub(W, G), sub(W, G))",
       "a product of identical subtrees is a square")
def _mul_self(n: Node) -> Node | None:
    return mk("sqr", n.args[0]) if n.args[0] == n.args[1] else None


@_rule("mms-idem", "mms(mms(x)), mms(zsn(x))", "mms(x)", ["mms"], "mms(zsn(mul(W, G)))",
       "min-max scaling ignores any earlier positive affine rescaling")
def _mms_idem(n: Node) -> Node | None:
    return mk("mms", n.args[0].args[0]) if _is(n.args[0], "mms", "zsn") else None


@_rule("zsn-idem", "zsn(zsn(x)), zsn(mms(x))", "zsn(x)", ["zsn"], "zsn(mms(sub(W, G)))",
       "the z-score ignores any earlier positive affine rescaling")
def _zsn_idem(n: Node) -> Node | None:
    return mk("zsn", n.args[0].args[0]) if _is(n.args[0], "mms", "zsn") else None


@_rule("sub-self", "sub(x, x)", "0", ["sub"], "add(W, sub(G, G))", "x - x = 0 (finite x)")
def _sub_self(n: Node) -> Node | None:
    return const(0.0) if n.args[0] == n.args[1] else None


@_rule("add-zero", "add(x, 0), add(0, x)", "x", ["add"], "add(mul(W, G), 0)", "0 is neutral for +")
def _add_zero(n: Node) -> Node | None:
    return _without_neutral(n, 0.0)


def _without_neutral(n: Node, neutral: float) -> Node | None:
    """The other argument of a commutative op when one argument is its neutral element."""
    a, b = n.args
    return a if _is_const(b, neutral) else b if _is_const(a, neutral) else None


@_rule("sub-zero", "sub(x, 0)", "x", ["sub"], "sub(mul(W, G), 0)", "0 is neutral for -")
def _sub_zero(n: Node) -> Node | None:
    return n.args[0] if _is_const(n.args[1], 0.0) else None


@_rule("zero-sub", "sub(0, x)", "neg(x)", ["sub"], "sub(0, mul(W, G))", "0 - x = -x")
def _zero_sub(n: Node) -> Node | None:
    return mk("neg", n.args[1]) if _is_const(n.args[0], 0.0) else None


@_rule("mul-zero", "mul(x, 0), mul(0, x)", "0", ["mul"], "add(W, mul(G, 0))", "x * 0 = 0 (finite x)")
def _mul_zero(n: Node) -> Node | None:
    return const(0.0) if _is_const(n.args[0], 0.0) or _is_const(n.args[1], 0.0) else None


@_rule("mul-one", "mul(x, 1), mul(1, x)", "x", ["mul"], "mul(1, mul(W, G))", "1 is neutral for *")
def _mul_one(n: Node) -> Node | None:
    return _without_neutral(n, 1.0)


@_rule("zero-div", "div(0, x)", "0", ["div"], "add(W, div(0, G))", "0 / ||x|| = 0 (non-zero x)")
def _zero_div(n: Node) -> Node | None:
    return const(0.0) if _is_const(n.args[0], 0.0) else None


@_rule("sub-neg", "sub(x, neg(y))", "add(x, y)", ["sub"], "sub(W, neg(G))", "x - (-y) = x + y")
def _sub_neg(n: Node) -> Node | None:
    a, b = n.args
    return mk("add", a, b.args[0]) if _is(b, "neg") else None


@_rule("add-neg", "add(x, neg(y)), add(neg(y), x)", "sub(x, y)", ["add"], "add(W, neg(G))",
       "x + (-y) = x - y")
def _add_neg(n: Node) -> Node | None:
    a, b = n.args
    if _is(b, "neg"):
        return mk("sub", a, b.args[0])
    return mk("sub", b, a.args[0]) if _is(a, "neg") else None


@_rule("neg-sub", "neg(sub(x, y))", "sub(y, x)", ["neg"], "neg(sub(W, G))", "-(x - y) = y - x")
def _neg_sub(n: Node) -> Node | None:
    a = n.args[0]
    return mk("sub", a.args[1], a.args[0]) if _is(a, "sub") else None


@_rule("mul-neg-neg", "mul(neg(x), neg(y))", "mul(x, y)", ["mul"], "mul(neg(W), neg(G))",
       "the two signs cancel")
def _mul_neg_neg(n: Node) -> Node | None:
    a, b = n.args
    return mk("mul", a.args[0], b.args[0]) if _is(a, "neg") and _is(b, "neg") else None


@_rule("div-sign", "div(x, neg(y)), div(x, abs(y))", "div(x, y)", ["div"], "div(W, neg(G))",
       "the norm of the divisor ignores its sign")
def _div_sign(n: Node) -> Node | None:
    a, b = n.args
    return mk("div", a, b.args[0]) if _is(b, "neg", "abs") else None


def _fold_value(op: str, args: list[float]) -> float | None:
    """Value of ``op`` on constants, by the registry's float function (the same conventions as
    its torch function); None if the op is not foldable or the value is not finite."""
    fn = registry.op(op).fold
    if fn is None:
        return None
    try:
        value = fn(*args)
    except (OverflowError, ValueError):
        return None
    return value if math.isfinite(value) else None


@_rule("fold", "op(constants)", "constant", FOLDABLE, "mul(W, add(2, 3))",
       "constant subexpressions are computed once")
def _fold(n: Node) -> Node | None:
    if not all(_is_const(a) for a in n.args):
        return None
    value = _fold_value(n.op, [a.value for a in n.args])  # type: ignore[misc]
    return None if value is None else const(value)


@_rule("log-exp", "log(exp(x))", "x", ["log"], "log(exp(sub(W, G)))",
       "ignores the +1e-3 inside log and exp's clamp at 100", exact=False)
def _log_exp(n: Node) -> Node | None:
    return n.args[0].args[0] if _is(n.args[0], "exp") else None


@_rule("exp-log", "exp(log(x))", "abs(x)", ["exp"], "exp(log(sub(W, G)))",
       "ignores the +1e-3 inside log", exact=False)
def _exp_log(n: Node) -> Node | None:
    return mk("abs", n.args[0].args[0]) if _is(n.args[0], "log") else None


# ------------------------------------------------------------------ engine

def from_tree(tree: gp.PrimitiveTree) -> Node:
    """Immutable Node form of a DEAP tree."""
    stack: list[Node] = []
    for node in reversed(tree):
        if is_constant(node):
            stack.append(const(node.value))
        elif node.arity == 0:
            stack.append(term(label(node)))
        else:
            args = [stack.pop() for _ in range(node.arity)]
            stack.append(mk(label(node), *args))
    return stack[0]


def to_tree(root: Node, like: Iterable[object] = ()) -> gp.PrimitiveTree:
    """DEAP tree of a Node, reusing the node objects of ``like`` where names match."""
    objects = {label(o): o for o in full_pset().mapping.values()}
    objects.update({label(o): o for o in like if not is_constant(o)})
    out: list[object] = []
    todo = [root]
    while todo:
        n = todo.pop()
        out.append(Constant(n.value) if n.value is not None else objects[n.op])
        todo.extend(reversed(n.args))
    return gp.PrimitiveTree(out)


def _ops(n: Node) -> set[str]:
    found: set[str] = set()
    todo = [n]
    while todo:
        m = todo.pop()
        if m.args:
            found.add(m.op)
            todo.extend(m.args)
    return found


class _Simplifier:
    """Applies the enabled rules bottom-up; records which fired."""

    def __init__(self, approximate: bool, allowed: set[str] | None) -> None:
        self.allowed = allowed
        self.fired: list[str] = []
        self.by_root: dict[str, list[Rule]] = {}
        for r in RULES:
            if r.exact or approximate:
                roots = r.roots if r.roots != FOLDABLE else \
                    [name for name, op in registry.OPS.items() if op.fold is not None]
                for op in roots:
                    self.by_root.setdefault(op, []).append(r)

    def run(self, n: Node, req: int) -> Node:
        """Simplify ``n``; the result must keep shape class >= ``req`` (see module doc)."""
        if len(n.args) == 1:
            a = self.run(n.args[0], n.args[0].cls if registry.op(n.op).reads_shape else req)
            if a is not n.args[0]:
                n = mk(n.op, a)
        elif len(n.args) == 2:
            need = n.cls if n.op == "div" else req
            a0, b0 = n.args
            a = self.run(a0, need if b0.cls < need else 0)
            b = self.run(b0, need if a.cls < need else 0)
            if a is not a0 or b is not b0:
                n = mk(n.op, a, b)
        for r in self.by_root.get(n.op, ()) if n.args else ():
            new = r.apply(n)
            if new is None or new.size >= n.size or new.cls < req:
                continue
            if self.allowed is not None and not _ops(new) <= self.allowed:
                continue
            self.fired.append(r.name)
            return self.run(new, req)
        return n


def simplify_traced(tree: gp.PrimitiveTree, approximate: bool = False,
                    pset: gp.PrimitiveSet | None = None) -> tuple[gp.PrimitiveTree, list[str]]:
    """``simplify`` plus the names of the rules that fired, in order."""
    allowed = None if pset is None else {p.name for p in pset.primitives[pset.ret]}
    s = _Simplifier(approximate, allowed)
    root = from_tree(tree)
    new = s.run(root, 0)
    if not s.fired:
        return gp.PrimitiveTree(list(tree)), []
    return to_tree(new, tree), s.fired


def simplify(tree: gp.PrimitiveTree, approximate: bool = False,
             pset: gp.PrimitiveSet | None = None) -> gp.PrimitiveTree:
    """A new tree, never larger, with opposing operations removed.

    ``approximate`` also drops log/exp pairs; ``pset`` forbids rewrites that
    would introduce an op missing from it (e.g. ``sqr`` in a space without it).
    """
    return simplify_traced(tree, approximate, pset)[0]


def rules_markdown() -> str:
    """The rule table as Markdown (for the README)."""
    lines = ["| rule | before | after | exact | why |", "|---|---|---|---|---|"]
    for r in RULES:
        lines.append(f"| {r.name} | `{r.before}` | `{r.after}` | {'yes' if r.exact else 'no'} | {r.reason} |")
    return "\n".join(lines)
