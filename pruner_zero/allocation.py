"""How the target sparsity is spread over the decoder's blocks: the same everywhere
(``uniform``), or OWL's outlier-weighted allocation (Yin et al., ICML 2024).

OWL, as published: per block, the share of its Wanda scores (|W|·sqrt(X), every linear of the
block together) above M times their mean is its outlier ratio; the ratios are scaled linearly
onto [0, 2λ], and a block's density is its scaled ratio minus their mean plus 1 - target. More
outliers, lower sparsity; the mean over the blocks is the target (every LLaMA block has the
same number of weights, so the decoder's sparsity is the target too). Pure tensor functions
apart from ``block_sparsities``, which reads the layers and their statistics.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from .errors import ConfigError

ALLOCATIONS = ("uniform", "owl")
OWL_M = 5.0  # the published defaults (LLaMA, 70%)
OWL_LAMBDA = 0.08


@dataclass(frozen=True)
class Allocation:
    """``kind`` uniform or owl; ``owl_m`` (M) and ``owl_lambda`` (λ) are OWL's."""

    kind: str = "uniform"
    owl_m: float = OWL_M
    owl_lambda: float = OWL_LAMBDA

    def checked(self) -> "Allocation":
        if self.kind not in ALLOCATIONS:
            raise ConfigError(f"--allocation must be one of {', '.join(ALLOCATIONS)}, got "
                              f"{self.kind!r}")
        for flag, value in (("--owl-m", self.owl_m), ("--owl-lambda", self.owl_lambda)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{flag} must be a positive number, got {value!r}")
        if self.owl_lambda >= 0.5:
            raise ConfigError(f"--owl-lambda must be below 0.5 (the blocks' sparsities span "
                              f"2λ), got {self.owl_lambda}")
        return self

    @property
    def uniform(self) -> bool:
        return self.kind == "uniform"

    def describe(self) -> str:
        if self.uniform:
            return "uniform"
        return f"owl (M {self.owl_m:g}, λ {self.owl_lambda:g})"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def outlier_ratio(scores: torch.Tensor | Sequence[Callable[[], torch.Tensor]], m: float) -> float:
    """The share of the scores above ``m`` times their mean (a fraction, not OWL's percent:
    the allocation is scale-free in it). A block's scores may come as one function per linear,
    each called twice (for the mean, then the count): one linear's scores in memory at a time."""
    parts = [lambda: scores] if isinstance(scores, torch.Tensor) else list(scores)
    total, numel = 0.0, 0
    for part in parts:
        s = part()
        total += float(s.sum(dtype=torch.float64))
        numel += s.numel()
    if numel == 0:
        return 0.0
    threshold = total / numel * m
    return sum(int((part().to(torch.float64) > threshold).sum()) for part in parts) / numel


def owl_sparsities(ratios: Sequence[float], target: float, lam: float) -> list[float]:
    """Each block's sparsity from its outlier ratio: ratios scaled onto [0, 2λ], a block's
    density its scaled ratio minus their mean plus 1 - target. Equal ratios: uniform."""
    lo, hi = min(ratios), max(ratios)
    if hi - lo <= 0:
        return [float(target)] * len(ratios)
    scaled = [(r - lo) / (hi - lo) * 2 * lam for r in ratios]
    mean = math.fsum(scaled) / len(scaled)
    sparsities = [1.0 - (s - mean + (1.0 - target)) for s in scaled]
    bad = [s for s in sparsities if not 0.0 < s < 1.0]
    if bad:
        raise ConfigError(f"OWL at sparsity {target:g} with λ {lam:g} asks a block for sparsity "
                          f"{bad[0]:.4f}, outside (0, 1): use a smaller --owl-lambda")
    return sparsities


_BLOCK = re.compile(r"\.(\d+)\.")


def block_index(name: str, prefix: str) -> int:
    """The decoder block of a linear named ``{prefix}.{i}.…``."""
    found = _BLOCK.match(name[len(prefix):]) if name.startswith(prefix) else None
    if found is None:
        raise ConfigError(f"{name} is not in a decoder block under {prefix}: OWL allocates "
                          "per block")
    return int(found.group(1))


def block_sparsities(allocation: Allocation, target: float, linears: Mapping[str, Any],
                     stats: Mapping[str, Mapping[str, torch.Tensor]], prefix: str) -> list[float]:
    """The sparsity of each decoder block, in block order (``stats`` hold each linear's X)."""
    blocks = sorted({block_index(n, prefix) for n in linears})
    if allocation.uniform:
        return [float(target)] * len(blocks)
    def wanda(name: str) -> Callable[[], torch.Tensor]:
        w = linears[name].weight
        return lambda: w.detach().abs().float() * stats[name]["X"].to(w.device, torch.float32).sqrt()

    ratios = [outlier_ratio([wanda(n) for n in linears if block_index(n, prefix) == b],
                            allocation.owl_m) for b in blocks]
    return owl_sparsities(ratios, target, allocation.owl_lambda)


def per_linear(sparsities: Sequence[float], linears: Mapping[str, Any], prefix: str
               ) -> dict[str, float]:
    """Each linear's sparsity: its block's."""
    blocks = sorted({block_index(n, prefix) for n in linears})
    of = dict(zip(blocks, sparsities))
    return {n: of[block_index(n, prefix)] for n in linears}
