"""Evaluate metric trees on tensors, and small structural helpers.

A metric is a DEAP ``PrimitiveTree`` in prefix order.  It is evaluated with an
explicit stack (no ``gp.compile``, which uses ``eval``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import torch
from deap import gp

from pruner_zero.errors import MetricError
from pruner_zero.metric import registry


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
    """Name of a node: op name, terminal name (W, G, X, ...) or constant text.

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
    """Names of the terminals (W, G, X, ...) the metric reads; constants excluded."""
    return {label(n) for n in tree if n.arity == 0 and not is_constant(n)}


MetricLike = Union[str, gp.PrimitiveTree]


def _terminal_values(needed: set[str], inputs: Mapping[str, torch.Tensor], dtype: torch.dtype
                     ) -> dict[str, torch.Tensor]:
    """Each terminal the metric reads, on the weight's device in ``dtype``, in its broadcast
    shape (a per-column terminal as a row [1, in]); derived terminals computed from theirs.
    Shapes that cannot combine are refused with a readable sentence."""
    W = inputs.get("W")
    if W is None or W.dim() != 2:
        raise MetricError("weight W must be a 2-D tensor [out, in], got "
                          f"{'nothing' if W is None else f'shape {tuple(W.shape)}'}.")
    values: dict[str, torch.Tensor] = {}
    for name in sorted(needed | {"W"}):
        _terminal_value(name, inputs, W, dtype, values)
    return values


def _terminal_value(name: str, inputs: Mapping[str, torch.Tensor], W: torch.Tensor,
                    dtype: torch.dtype, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """One terminal into ``values`` (a plain recursive function: a recursive closure would be a
    reference cycle holding a layer's tensors until the garbage collector runs)."""
    if name in values:
        return values[name]
    t = registry.terminal(name)
    if t.derive is not None:
        v = t.derive({n: _terminal_value(n, inputs, W, dtype, values) for n in t.needs})
    else:
        given = inputs.get(name)
        if given is None:
            raise MetricError(f"metric uses {name} but no values of {name} ({t.doc}) were given.")
        v = given.to(device=W.device, dtype=dtype)
        if t.shape == registry.COLUMN:
            if v.numel() != W.shape[1]:
                raise MetricError(f"{name} has {v.numel()} values, expected one per input "
                                  f"column ({W.shape[1]}).")
            v = v.reshape(1, -1)
    want = tuple(W.shape) if t.shape == registry.MATRIX else (1, W.shape[1])
    if tuple(v.shape) != want:
        raise MetricError(f"{name} has shape {tuple(v.shape)}, expected {want} "
                          f"({'the weight' if t.shape == registry.MATRIX else 'a row'}'s shape).")
    values[name] = v
    return v


@torch.no_grad()
def score_metric(tree: gp.PrimitiveTree, inputs: Mapping[str, torch.Tensor],
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Score every weight: a tensor of the weight's shape.

    ``inputs`` maps terminal names to tensors: ``W`` (|weight|, which gives the shape) and the
    statistics the metric reads (G, X, ...); unused ones may be absent. Ops broadcast like the
    original repository and only the final result is expanded to the weight's shape. NaN/inf
    are not checked here (see ``check_scores``). ``dtype`` is float32 as in the original; tests
    may ask for float64.
    """
    values = _terminal_values(leaves(tree), inputs, dtype)
    W = values["W"]
    stack: list[torch.Tensor] = []
    for node in reversed(tree):
        if node.arity == 0:
            if is_constant(node):
                stack.append(torch.tensor(node.value, dtype=dtype, device=W.device))
            else:
                stack.append(values[label(node)])
            continue
        fn = registry.op(node.name).torch
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
    given = [t for t in (*inputs.values(), *values.values()) if t is not None]
    if any(result.data_ptr() == t.data_ptr() for t in given):
        result = result.clone()
    return result


def check_scores(scores: torch.Tensor, formula: MetricLike, constant_ok: bool = False) -> None:
    """Raise MetricError when scores cannot rank weights (NaN/inf, or all equal unless
    ``constant_ok``: a part of a layer may tie where the whole does not)."""
    lo, hi = torch.aminmax(scores)  # one pass: a NaN anywhere makes both NaN
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))):
        raise MetricError(f"metric {formula} yields NaN/inf scores.")
    if not constant_ok and scores.numel() > 1 and bool(lo == hi):
        raise MetricError(f"metric {formula} yields constant scores (all weights score the same).")
