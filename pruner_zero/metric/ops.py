"""The torch functions of the metric language's ops (``registry`` declares each op with its
other forms).

The numeric conventions copy the original Pruner-Zero repository
(``lib/gptree.py``) exactly, so metrics found there score weights the same
way here: binary ops broadcast their operands first, ``div`` divides by the
Frobenius norm of the *broadcast* divisor, ``log``/``sqrt`` take ``abs`` of
their input, ``exp`` clamps at 100, ``mms``/``zsn`` normalise over the whole
tensor.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

LOG_EPS = 1e-3
"""``log(x) = log(|x| + LOG_EPS)`` keeps log finite at zero."""

EXP_CLAMP = 100.0
"""``exp(x) = exp(min(x, EXP_CLAMP))`` mirrors the original overflow guard."""


def add(x: Tensor, y: Tensor) -> Tensor:
    """Elementwise sum (broadcasting)."""
    x, y = torch.broadcast_tensors(x, y)
    return x + y


def sub(x: Tensor, y: Tensor) -> Tensor:
    """Elementwise difference (broadcasting)."""
    x, y = torch.broadcast_tensors(x, y)
    return x - y


def mul(x: Tensor, y: Tensor) -> Tensor:
    """Elementwise product (broadcasting)."""
    x, y = torch.broadcast_tensors(x, y)
    return x * y


def div(x: Tensor, y: Tensor) -> Tensor:
    """``x / ||y||_F``: the original divides by the norm of broadcast ``y``, never elementwise."""
    x, y = torch.broadcast_tensors(x, y)
    return x / torch.norm(y)


def sqr(x: Tensor) -> Tensor:
    """Square as ``x * x``."""
    return x * x


def neg(x: Tensor) -> Tensor:
    """Negation."""
    return -x


def abs_(x: Tensor) -> Tensor:
    """Absolute value."""
    return torch.abs(x)


def log(x: Tensor) -> Tensor:
    """``log(|x| + 1e-3)``: defined (finite) for every input."""
    return torch.log(torch.abs(x) + LOG_EPS)


def exp(x: Tensor) -> Tensor:
    """``exp(min(x, 100))``: clamped like the original to limit overflow."""
    return torch.exp(x.clamp(max=EXP_CLAMP))


def sqrt(x: Tensor) -> Tensor:
    """``sqrt(|x|)``: defined for every input."""
    return torch.sqrt(torch.abs(x))


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent."""
    return torch.tanh(x)


def pow_(x: Tensor) -> Tensor:
    """Square as ``torch.pow(x, 2)`` (a separate op in the paper's search space)."""
    return torch.pow(x, 2)


def skp(x: Tensor) -> Tensor:
    """Identity ("skip"), kept because the paper's search space has it."""
    return x


def mms(x: Tensor) -> Tensor:
    """Min-max scaling to [0, 1] over the whole tensor."""
    return (x - x.min()) / (x.max() - x.min())


def zsn(x: Tensor) -> Tensor:
    """Z-score over the whole tensor (torch's default, unbiased std)."""
    return (x - x.mean()) / x.std()


def rown(x: Tensor) -> Tensor:
    """``x`` over the sum of ``|x|`` along its row (one output's weights): RIA's relative
    importance within a row, which no op of the paper's set can express."""
    return x / torch.abs(x).sum(dim=-1, keepdim=True)


def coln(x: Tensor) -> Tensor:
    """``x`` over the sum of ``|x|`` down its column (one input's weights): RIA's other half."""
    return x / torch.abs(x).sum(dim=0, keepdim=True)
