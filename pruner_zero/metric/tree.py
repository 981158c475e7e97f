"""Evaluate metric trees on tensors, and small structural helpers.

A metric is a DEAP ``PrimitiveTree`` in prefix order.  It is evaluated with an
explicit stack (no ``gp.compile``, which uses ``eval``).
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
from deap import gp

from pruner_zero.errors import MetricError
from pruner_zero.metric.ops import OPS, TERMINALS


def format_number(value: float) -> str:
    """Formula text of a constant: integers without a trailing ``.0``."""
    value = float(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


class Constant(gp.Terminal):
    """A numeric constant leaf; ``value`` is a float, ``name`` its formula text.

    A subclass (not a plain ``gp.Terminal``) so that ``str(tree)`` prints
    ``100`` rather than ``100.0`` and so constants are easy to recognise.
    """

    __slots__ = ()

    def __init__(self, value: float) -> None:
        super().__init__(float(value), False, object)
        self.name = format_number(self.value)

    def format(self) -> str:
        """Formula text (what ``str(tree)`` shows)."""
        return self.name


def is_constant(node: object) -> bool:
    """True for numeric-constant leaves."""
    return isinstance(node, Constant)


def label(node: object) -> str:
    """Name of a node: op name, terminal name (W, G, X) or constant text.

    DEAP's ``renameArguments`` leaves a terminal's ``.name`` at ``ARG0`` and
    stores the new name in ``.value``, so argument terminals use ``.value``.
    """
    if isinstance(node, gp.Terminal) and not isinstance(node, Constant) and isinstance(node.value, str):
        return node.value
    return node.name  # type: ignore[attr-defined]


def size(tree: Sequence) -> int:
    """Number of nodes."""
    return len(tree)


def height(tree: gp.PrimitiveTree) -> int:
    """Depth of the deepest leaf (a single leaf has height 0), as in DEAP."""
    return tree.height


def leaves(tree: Sequence) -> set[str]:
    """Names of the input terminals (W, G, X) the metric reads; constants excluded."""
    return {label(n) for n in tree if n.arity == 0 and not is_constant(n)}


MetricLike = Union[str, gp.PrimitiveTree]


def _check_inputs(W: torch.Tensor, G: torch.Tensor | None, X: torch.Tensor | None,
                  needed: set[str]) -> None:
    """Reject inputs whose shapes cannot be combined, with a readable sentence."""
    if W.dim() != 2:
        raise MetricError(f"weight W must be a 2-D tensor [out, in], got shape {tuple(W.shape)}.")
    if "G" in needed:
        if G is None:
            raise MetricError("metric uses G but no gradient statistics were given.")
        if tuple(G.shape) != tuple(W.shape):
            raise MetricError(
                f"gradient G has shape {tuple(G.shape)}, expected the weight's shape {tuple(W.shape)}.")
    if "X" in needed:
        if X is None:
            raise MetricError("metric uses X but no activation statistics were given.")
        if X.numel() != W.shape[1]:
            raise MetricError(
                f"activation statistic X has {X.numel()} values, expected one per input column ({W.shape[1]}).")


@torch.no_grad()
def evaluate(tree: gp.PrimitiveTree, W: torch.Tensor, G: torch.Tensor | None = None,
             X: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Score every weight: a tensor of ``W.shape`` (W is |weight|, G and X non-negative).

    X (one value per input column) is used as a row vector ``[1, in]``; ops
    broadcast like the original repository and only the final result is
    expanded to ``W.shape``.  NaN/inf are not checked here (see ``check_scores``).
    ``dtype`` is float32 as in the original; tests may ask for float64.
    """
    needed = leaves(tree)
    unknown = needed - set(TERMINALS)
    if unknown:
        raise MetricError(f"metric uses unknown terminal(s) {sorted(unknown)}; known: W, G, X.")
    _check_inputs(W, G, X, needed)
    inputs = {"W": W.to(dtype)}
    if "G" in needed:
        inputs["G"] = G.to(device=W.device, dtype=dtype)  # type: ignore[union-attr]
    if "X" in needed:
        inputs["X"] = X.to(device=W.device, dtype=dtype).reshape(1, -1)  # type: ignore[union-attr]

    stack: list[torch.Tensor] = []
    for node in reversed(tree):
        if node.arity == 0:
            if is_constant(node):
                stack.append(torch.tensor(node.value, dtype=dtype, device=W.device))
            else:
                stack.append(inputs[label(node)])
            continue
        fn = OPS.get(node.name)
        if fn is None:
            raise MetricError(f"metric uses unknown op '{node.name}'.")
        if len(stack) < node.arity:
            raise MetricError(f"metric {tree} is malformed: '{node.name}' lacks arguments.")
        args = [stack.pop() for _ in range(node.arity)]
        stack.append(fn(*args))
    if len(stack) != 1:
        raise MetricError(f"metric {tree} is malformed: it leaves {len(stack)} values instead of one.")
    result = stack[0]

    shape = tuple(W.shape)
    try:
        ok = torch.broadcast_shapes(tuple(result.shape), shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise MetricError(
            f"metric {tree} yields shape {tuple(result.shape)}, expected {shape} (the weight's shape).")
    if tuple(result.shape) != shape:
        result = result.expand(shape).contiguous()
    # Never hand back an input tensor itself: callers may modify scores in place.
    if any(result.data_ptr() == t.data_ptr() for t in (W, G, X) if t is not None):
        result = result.clone()
    return result


def check_scores(scores: torch.Tensor, formula: MetricLike) -> None:
    """Raise MetricError when scores cannot rank weights (NaN/inf, or all equal)."""
    if not bool(torch.isfinite(scores).all()):
        raise MetricError(f"metric {formula} yields NaN/inf scores.")
    if scores.numel() > 1 and bool(scores.max() == scores.min()):
        raise MetricError(f"metric {formula} yields constant scores (all weights score the same).")
