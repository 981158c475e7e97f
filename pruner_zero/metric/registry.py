"""The metric language, declared once: every op and every terminal with all that the rest of
the package needs to know of it.

An op carries its torch function (scoring), its float function (constant folding in OOS), its
sympy form (canonical keys, LaTeX), and the sign fact the simplifier uses. A terminal carries
its shape class (a matrix like the weight, or one value per input column), its sign, and where
its values come from: the layer's weight, a statistic computed on calibration data, or a
function of other terminals. Parser, printer, search spaces, sympy export, OOS and the tree
evaluator all read this table, so a new op or terminal is one entry here (and, at most, one
OOS rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import sympy
import torch

from pruner_zero.errors import MetricError
from pruner_zero.metric import ops, sympy_forms as sf

Tensor = torch.Tensor

MATRIX, COLUMN = 2, 1
"""Shape classes: a terminal shaped like the weight [out, in], or a row [1, in] (one value per
input column, broadcast over the rows). Constants are class 0 (scalars)."""

ALWAYS, IF_FIRST, IF_ALL, NEVER = "always", "if_first", "if_all", "never"
"""When an op's result is provably non-negative: always, when its first argument is, when all
its arguments are, or not provably (the simplifier's ``abs-nonneg`` rule reads this)."""


@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    torch: Callable[..., Tensor]
    sympy: Callable[[list, int], sympy.Expr]
    """(argument expressions, broadcast shape class of the result) -> expression."""
    fold: Callable[..., float] | None = None
    """The same function on Python floats (OOS folds constant subtrees); None: never folded."""
    nonneg: str = NEVER
    doc: str = ""
    reads_shape: bool = False
    """Its value depends on how many elements its operand has (X alone is a row; beside W it
    is repeated over the rows): a rewrite of the operand must keep that shape."""


@dataclass(frozen=True)
class Terminal:
    name: str
    shape: int  # MATRIX or COLUMN
    nonneg: bool = True
    statistic: str | None = None
    """Name of the per-layer statistic that holds it (computed on calibration data: X, G); None
    for the weight itself (|W|) or a derived terminal."""
    derive: Callable[[Mapping[str, Tensor]], Tensor] | None = None
    """A terminal computed from other terminals of the same layer (e.g. |W|·X)."""
    needs: tuple[str, ...] = ()
    """The terminals ``derive`` reads."""
    doc: str = ""


OPS: dict[str, Op] = {}
TERMINALS: dict[str, Terminal] = {}
_version = [0]  # bumped on every change, so caches built from the table (psets) are rebuilt


def shape_class(expr: sympy.Expr) -> int:
    """Shape class implied by the terminals an expression still contains (0: a scalar)."""
    return max((TERMINALS[s.name].shape for s in expr.free_symbols if s.name in TERMINALS),
               default=0)


def shaped(fn: type[sympy.Function], expr: sympy.Expr, cls: int) -> sympy.Expr:
    """``fn(expr)``, plus the broadcast class when it differs from the symbols'."""
    return fn(expr) if shape_class(expr) == cls else fn(expr, sympy.Integer(cls))


def version() -> int:
    return _version[0]


def register_op(op: Op) -> Op:
    """Declare an op (or replace the declaration of the same name)."""
    if op.arity not in (1, 2):
        raise MetricError(f"op {op.name}: arity must be 1 or 2, got {op.arity}")
    if op.name in TERMINALS or not op.name.isidentifier():
        raise MetricError(f"op name {op.name!r} must be an identifier and not a terminal")
    if op.nonneg not in (ALWAYS, IF_FIRST, IF_ALL, NEVER):
        raise MetricError(f"op {op.name}: nonneg must be one of always, if_first, if_all, never")
    OPS[op.name] = op
    _version[0] += 1
    return op


def register_terminal(t: Terminal) -> Terminal:
    """Declare a terminal (or replace the declaration of the same name)."""
    if t.name in OPS or not t.name.isidentifier():
        raise MetricError(f"terminal name {t.name!r} must be an identifier and not an op")
    if t.shape not in (MATRIX, COLUMN):
        raise MetricError(f"terminal {t.name}: shape must be MATRIX or COLUMN")
    if (t.derive is None) == bool(t.needs):
        raise MetricError(f"terminal {t.name}: a derived terminal gives derive and needs, "
                          "others neither")
    TERMINALS[t.name] = t
    _version[0] += 1
    return t


def unregister(name: str) -> None:
    """Remove an op or terminal (tests that declare toy ones at runtime clean up with it)."""
    OPS.pop(name, None)
    TERMINALS.pop(name, None)
    _version[0] += 1


def op(name: str) -> Op:
    try:
        return OPS[name]
    except KeyError:
        raise MetricError(f"metric uses unknown op '{name}'.") from None


def terminal(name: str) -> Terminal:
    try:
        return TERMINALS[name]
    except KeyError:
        raise MetricError(f"metric uses unknown terminal '{name}'; known: "
                          f"{', '.join(TERMINALS)}.") from None


def names(arity: int) -> tuple[str, ...]:
    """Op names of one arity, in declaration order (the original repository's order)."""
    return tuple(n for n, o in OPS.items() if o.arity == arity)


def statistics_read(terminal_names) -> set[str]:
    """The per-layer statistics the given terminals need, through derived terminals too."""
    out: set[str] = set()
    todo = list(terminal_names)
    while todo:
        t = terminal(todo.pop())
        if t.statistic is not None:
            out.add(t.statistic)
        todo.extend(t.needs)
    return out


def symbol(name: str) -> sympy.Symbol:
    """The sympy symbol of a terminal (non-negative when the terminal is)."""
    return sympy.Symbol(name, nonnegative=True) if terminal(name).nonneg else sympy.Symbol(name)


# ----------------------------------------------------------------------------- the table
def _float_log(x: float) -> float:
    return math.log(abs(x) + ops.LOG_EPS)


def _float_exp(x: float) -> float:
    return math.exp(min(x, ops.EXP_CLAMP))


def _float_div(x: float, y: float) -> float:
    return x / abs(y) if y != 0 else math.nan


for _op in (
    # unary, in the original repository's order
    Op("sqr", 1, ops.sqr, lambda a, c: a[0] ** 2, lambda x: x * x, ALWAYS, "x·x"),
    Op("neg", 1, ops.neg, lambda a, c: -a[0], lambda x: -x, NEVER, "-x"),
    Op("abs", 1, ops.abs_, lambda a, c: sympy.Abs(a[0]), abs, ALWAYS, "|x|"),
    Op("log", 1, ops.log, lambda a, c: sf.Log3(a[0]), _float_log, NEVER, "log(|x| + 1e-3)"),
    Op("exp", 1, ops.exp, lambda a, c: sf.ExpC(a[0]), _float_exp, ALWAYS, "exp(min(x, 100))"),
    Op("sqrt", 1, ops.sqrt, lambda a, c: sympy.sqrt(sympy.Abs(a[0])), lambda x: math.sqrt(abs(x)),
       ALWAYS, "sqrt(|x|)"),
    Op("tanh", 1, ops.tanh, lambda a, c: sympy.tanh(a[0]), math.tanh, IF_FIRST, "tanh(x)"),
    Op("pow", 1, ops.pow_, lambda a, c: a[0] ** 2, lambda x: x * x, ALWAYS, "x², as torch.pow"),
    Op("skp", 1, ops.skp, lambda a, c: a[0], lambda x: x, IF_FIRST, "identity"),
    Op("mms", 1, ops.mms, lambda a, c: sf.MMS(a[0]), None, ALWAYS,
       "min-max scaling over the layer (a scalar's is NaN: never folded)"),
    Op("zsn", 1, ops.zsn, lambda a, c: shaped(sf.ZSN, a[0], c), None, NEVER,
       "z-score over the layer", reads_shape=True),
    # beyond the paper's set (search space "extended"): RIA's relative importance
    Op("rown", 1, ops.rown, lambda a, c: shaped(sf.RowN, a[0], c), None, IF_FIRST,
       "x / sum of |x| along its row", reads_shape=True),
    Op("coln", 1, ops.coln, lambda a, c: shaped(sf.ColN, a[0], c), None, IF_FIRST,
       "x / sum of |x| down its column", reads_shape=True),
    # binary
    Op("add", 2, ops.add, lambda a, c: a[0] + a[1], lambda x, y: x + y, IF_ALL, "x + y"),
    Op("sub", 2, ops.sub, lambda a, c: a[0] - a[1], lambda x, y: x - y, NEVER, "x - y"),
    Op("mul", 2, ops.mul, lambda a, c: a[0] * a[1], lambda x, y: x * y, IF_ALL, "x · y"),
    Op("div", 2, ops.div, lambda a, c: a[0] / shaped(sf.Norm, a[1], c), _float_div, IF_FIRST,
       "x / ‖y‖ (Frobenius norm of the broadcast divisor)"),
):
    register_op(_op)

for _t in (
    Terminal("W", MATRIX, doc="|weight|"),
    Terminal("G", MATRIX, statistic="G", doc="l2 norm over calibration samples of dLoss/dW"),
    Terminal("X", COLUMN, statistic="X", doc="mean squared input activation per column"),
    # beyond the paper's set: SparseGPT's curvature, so that mul(sqr(W), H) is its saliency
    Terminal("H", COLUMN, statistic="H", doc="1 / [chol(H⁻¹)]_jj² per input column, H the "
             "damped Hessian 2/n·Σxxᵀ: the OBS saliency's curvature; the dense model's, as G, "
             "except under --update sweep or sweep-lsq (the walk's inputs)"),
):
    register_terminal(_t)
del _op, _t
