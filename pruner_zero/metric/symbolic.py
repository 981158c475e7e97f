"""Metrics as sympy expressions: LaTeX for reports, canonical keys for dedup.

Symbols W, G, X are declared non-negative (|weight|, a norm, a mean of
squares), so sympy itself removes e.g. ``Abs(W)``.  Ops without an exact sympy
equivalent are opaque functions with the original semantics:

* ``Log3(x)  = log(|x| + 1e-3)``
* ``ExpC(x)  = exp(min(x, 100))``
* ``MMS(x)`` min-max scaling, ``ZSN(x)`` z-score over the whole tensor,
* ``Norm(y)`` the Frobenius norm in ``div(x, y) = x / Norm(y)``.

Norm and z-score depend on the *shape* the operand was broadcast to (X alone
is a row [1, in]; next to W or G it is repeated over the rows).  When that
shape differs from what the operand's own symbols imply, it is kept as a
second argument (1 = row, 2 = full) so that keys never merge metrics whose
scores differ.
"""

from __future__ import annotations

import sympy
from deap import gp
from sympy import Abs, Function, Integer, Rational, S, Symbol

from pruner_zero.errors import MetricError
from pruner_zero.metric.tree import format_number, is_constant, label

W = Symbol("W", nonnegative=True)
G = Symbol("G", nonnegative=True)
X = Symbol("X", nonnegative=True)
SYMBOLS: dict[str, Symbol] = {"W": W, "G": G, "X": X}
_CLASS = {W: 2, G: 2, X: 1}
"""Broadcast shape class of each input: 2 = [out, in], 1 = [1, in], 0 = scalar."""


def shape_class(expr: sympy.Expr) -> int:
    """Shape class implied by the symbols an expression still contains."""
    return max((_CLASS.get(s, 0) for s in expr.free_symbols), default=0)


def _with_exp(latex: str, exp) -> str:  # type: ignore[no-untyped-def]
    """sympy asks a function for f(x)^n with ``exp``: our forms are wrapped and raised."""
    return latex if exp is None else r"\left(%s\right)^{%s}" % (latex, exp)


def _arg_latex(printer, expr) -> str:  # type: ignore[no-untyped-def]
    return printer._print(expr)


class Log3(Function):
    """``log(|x| + 1e-3)``: abs and sign of the argument do not matter."""

    nargs = 1

    @classmethod
    def eval(cls, x):  # type: ignore[no-untyped-def]
        if isinstance(x, Abs):
            return cls(x.args[0])
        if x.could_extract_minus_sign():
            return cls(-x)
        return None

    def _eval_is_real(self):  # type: ignore[no-untyped-def]
        return self.args[0].is_real

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        arg = _arg_latex(printer, self.args[0])
        if self.args[0].is_nonnegative:
            return r"\log\left(%s + 10^{-3}\right)" % arg
        return _with_exp(r"\log\left(\left|%s\right| + 10^{-3}\right)" % arg, exp)


class ExpC(Function):
    """``exp(min(x, 100))``: the clamp makes it differ from sympy's exp."""

    nargs = 1

    def _eval_is_positive(self):  # type: ignore[no-untyped-def]
        return True if self.args[0].is_extended_real else None

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        return _with_exp(r"\exp\left(\min\left(%s, 100\right)\right)" % _arg_latex(printer, self.args[0]), exp)


def _strip_affine(x):  # type: ignore[no-untyped-def]
    """``x`` without an added number or a positive numeric factor (mms/zsn ignore both)."""
    coeff, rest = x.as_coeff_Add()
    if coeff != 0 and rest != 0:
        return rest
    coeff, rest = x.as_coeff_Mul()
    if coeff.is_positive and coeff != 1 and rest != 1:
        return rest
    return None


class MMS(Function):
    """Min-max scaling over the whole tensor (independent of broadcasting)."""

    nargs = 1

    @classmethod
    def eval(cls, x):  # type: ignore[no-untyped-def]
        if isinstance(x, (MMS, ZSN)):
            return cls(x.args[0])
        rest = _strip_affine(x)
        return cls(rest) if rest is not None else None

    def _eval_is_nonnegative(self):  # type: ignore[no-untyped-def]
        return True

    def _eval_is_real(self):  # type: ignore[no-untyped-def]
        return True

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        return _with_exp(r"\operatorname{mms}\left(%s\right)" % _arg_latex(printer, self.args[0]), exp)


class ZSN(Function):
    """Z-score over the whole tensor; optional 2nd arg = broadcast shape class."""

    nargs = (1, 2)

    @classmethod
    def eval(cls, x, *k):  # type: ignore[no-untyped-def]
        if isinstance(x, MMS):
            return cls(x.args[0], *k)
        if isinstance(x, ZSN) and tuple(x.args[1:]) == k:
            return x
        rest = _strip_affine(x)
        return cls(rest, *k) if rest is not None else None

    def _eval_is_real(self):  # type: ignore[no-untyped-def]
        return True

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        return _with_exp(r"\operatorname{zsn}\left(%s\right)" % _arg_latex(printer, self.args[0]), exp)


class Norm(Function):
    """Frobenius norm of the divisor in ``div``; optional 2nd arg = broadcast shape class."""

    nargs = (1, 2)

    @classmethod
    def eval(cls, y, *k):  # type: ignore[no-untyped-def]
        if isinstance(y, Abs):
            return cls(y.args[0], *k)
        if y.could_extract_minus_sign():
            return cls(-y, *k)
        if y == 0:
            return S.Zero
        if y.is_Number and not k:
            return Abs(y)
        return None

    def _eval_is_nonnegative(self):  # type: ignore[no-untyped-def]
        return True

    def _eval_is_real(self):  # type: ignore[no-untyped-def]
        return True

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        return _with_exp(r"\left\lVert %s \right\rVert" % _arg_latex(printer, self.args[0]), exp)


def _shaped(fn: type[Function], expr: sympy.Expr, cls: int) -> sympy.Expr:
    """``fn(expr)``, plus the broadcast class when it differs from the symbols'."""
    return fn(expr) if shape_class(expr) == cls else fn(expr, Integer(cls))


def _constant(value: float) -> sympy.Expr:
    """Exact rational for a constant, so 0.5 * 2 folds to 1."""
    return Rational(format_number(value))


def to_sympy(tree: gp.PrimitiveTree) -> sympy.Expr:
    """The metric as a sympy expression (sympy canonicalises it automatically)."""
    stack: list[tuple[sympy.Expr, int]] = []
    for node in reversed(tree):
        name = label(node)
        if node.arity == 0:
            if is_constant(node):
                stack.append((_constant(node.value), 0))
            elif name in SYMBOLS:
                stack.append((SYMBOLS[name], _CLASS[SYMBOLS[name]]))
            else:
                raise MetricError(f"metric uses unknown terminal '{name}'.")
            continue
        args = [stack.pop() for _ in range(node.arity)]
        (a, ca) = args[0]
        if node.arity == 1:
            stack.append((_unary(name, a, ca), ca))
        else:
            (b, cb) = args[1]
            stack.append((_binary(name, a, b, max(ca, cb)), max(ca, cb)))
    if len(stack) != 1:
        raise MetricError(f"metric {tree} is malformed.")
    return stack[0][0]


def _unary(name: str, a: sympy.Expr, cls: int) -> sympy.Expr:
    if name in ("sqr", "pow"):
        return a**2
    if name == "neg":
        return -a
    if name == "abs":
        return Abs(a)
    if name == "log":
        return Log3(a)
    if name == "exp":
        return ExpC(a)
    if name == "sqrt":
        return sympy.sqrt(Abs(a))
    if name == "tanh":
        return sympy.tanh(a)
    if name == "skp":
        return a
    if name == "mms":
        return MMS(a)
    if name == "zsn":
        return _shaped(ZSN, a, cls)
    raise MetricError(f"metric uses unknown op '{name}'.")


def _binary(name: str, a: sympy.Expr, b: sympy.Expr, cls: int) -> sympy.Expr:
    if name == "add":
        return a + b
    if name == "sub":
        return a - b
    if name == "mul":
        return a * b
    if name == "div":
        return a / _shaped(Norm, b, cls)
    raise MetricError(f"metric uses unknown op '{name}'.")


def to_latex(tree: gp.PrimitiveTree) -> str:
    """LaTeX of the metric, with named ops (mms, zsn) and explicit log/exp guards."""
    return sympy.latex(to_sympy(tree))


def canonical_key(tree: gp.PrimitiveTree) -> str:
    """A string equal for metrics sympy proves equal (commutativity, x-x, sqr=pow=x*x, ...).

    Uses only sympy's automatic canonicalisation (no ``simplify``), so it is
    fast; different keys do not prove that two metrics differ.
    """
    return sympy.srepr(to_sympy(tree))


__all__ = ["W", "G", "X", "Log3", "ExpC", "MMS", "ZSN", "Norm", "to_sympy", "to_latex",
           "canonical_key", "shape_class"]
