"""The sympy functions of the ops that have no exact sympy equivalent, with the original
semantics (the registry's sympy forms use them):

* ``Log3(x)  = log(|x| + 1e-3)``
* ``ExpC(x)  = exp(min(x, 100))``
* ``MMS(x)`` min-max scaling, ``ZSN(x)`` z-score over the whole tensor,
* ``Norm(y)`` the Frobenius norm in ``div(x, y) = x / Norm(y)``,
* ``RowN(x)``, ``ColN(x)``: x over the sum of |x| along its row, down its column.

Norm and z-score depend on the *shape* the operand was broadcast to (X alone is a row [1, in];
next to W or G it is repeated over the rows). When that shape differs from what the operand's
own symbols imply, it is kept as a second argument (1 = row, 2 = full) so that keys never merge
metrics whose scores differ.
"""

from __future__ import annotations

import sympy
from sympy import Abs, Function, Rational, S

from pruner_zero.metric.ops import EXP_CLAMP, LOG_EPS


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

    def _eval_evalf(self, prec):  # type: ignore[no-untyped-def]
        return sympy.log(Abs(self.args[0]) + Rational(str(LOG_EPS)))._eval_evalf(prec)

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

    def _eval_evalf(self, prec):  # type: ignore[no-untyped-def]
        return sympy.exp(sympy.Min(self.args[0], Rational(str(EXP_CLAMP))))._eval_evalf(prec)

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


class _WholeTensor(Function):
    """A real function of a whole tensor, printed as ``latex_form`` around its argument.

    ``f(g(y)) = f(y)`` for the functions g in ``absorbs`` (for g = f: with the same broadcast
    class), and a scaling (the default ``_reduced``) ignores an added number or a positive
    factor."""

    latex_form = "%s"
    absorbs: tuple[type, ...] = ()

    @classmethod
    def eval(cls, x, *k):  # type: ignore[no-untyped-def]
        if isinstance(x, cls.absorbs) and (type(x) is not cls or tuple(x.args[1:]) == k):
            return cls(x.args[0], *k)
        return cls._reduced(x, k)

    @classmethod
    def _reduced(cls, x, k):  # type: ignore[no-untyped-def]
        rest = _strip_affine(x)
        return cls(rest, *k) if rest is not None else None

    def _eval_is_real(self):  # type: ignore[no-untyped-def]
        return True

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        return _with_exp(self.latex_form % _arg_latex(printer, self.args[0]), exp)


class _NonNegativeWholeTensor(_WholeTensor):
    def _eval_is_nonnegative(self):  # type: ignore[no-untyped-def]
        return True


class MMS(_NonNegativeWholeTensor):
    """Min-max scaling over the whole tensor (independent of broadcasting)."""

    nargs = 1
    latex_form = r"\operatorname{mms}\left(%s\right)"


class ZSN(_WholeTensor):
    """Z-score over the whole tensor; optional 2nd arg = broadcast shape class."""

    nargs = (1, 2)
    latex_form = r"\operatorname{zsn}\left(%s\right)"


MMS.absorbs = ZSN.absorbs = (MMS, ZSN)  # both are affine maps of their argument


class Norm(_NonNegativeWholeTensor):
    """Frobenius norm of the divisor in ``div``; optional 2nd arg = broadcast shape class."""

    nargs = (1, 2)
    latex_form = r"\left\lVert %s \right\rVert"
    absorbs = (Abs,)

    @classmethod
    def _reduced(cls, y, k):  # type: ignore[no-untyped-def]
        if y.could_extract_minus_sign():
            return cls(-y, *k)
        if y == 0:
            return S.Zero
        if y.is_Number and not k:
            return Abs(y)
        return None


class _Relative(Function):
    """``x`` over the sum of ``|x|`` along one axis: a positive factor cancels, a negative one
    comes out; optional 2nd arg = broadcast shape class (the sums depend on the shape)."""

    nargs = (1, 2)
    latex_form = "%s"

    @classmethod
    def eval(cls, x, *k):  # type: ignore[no-untyped-def]
        coeff, rest = x.as_coeff_Mul()
        if rest == 1:  # a number alone: kept (its value depends on the shape it stands for)
            return None
        if coeff.is_negative:
            return -cls(-x, *k)
        if coeff.is_positive and coeff != 1:
            return cls(rest, *k)
        return None

    def _eval_is_real(self):  # type: ignore[no-untyped-def]
        return True

    def _eval_is_nonnegative(self):  # type: ignore[no-untyped-def]
        return self.args[0].is_nonnegative

    def _latex(self, printer, exp=None):  # type: ignore[no-untyped-def]
        return _with_exp(self.latex_form % _arg_latex(printer, self.args[0]), exp)


class RowN(_Relative):
    latex_form = r"\operatorname{rown}\left(%s\right)"


class ColN(_Relative):
    latex_form = r"\operatorname{coln}\left(%s\right)"
