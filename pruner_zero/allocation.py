"""How the target sparsity is spread over the decoder's blocks: the same everywhere
(``uniform``), OWL's outlier-weighted allocation (Yin et al., ICML 2024), or each block's
sparsity as given in a file (``given``: a list, or a report's ``allocation`` record).

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
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch

from .errors import ConfigError
from .files import read_json, user_path

if TYPE_CHECKING:
    from .masks import Structure

ALLOCATIONS = ("uniform", "owl", "given")
MEAN_TOLERANCE = 1e-6
"""How far a given allocation's mean may be from the requested sparsity (rounding in a file)."""
OWL_M = 5.0  # the published defaults (LLaMA, 70%)
OWL_LAMBDA = 0.08


@dataclass(frozen=True)
class Allocation:
    """``kind`` uniform, owl or given; ``owl_m`` (M) and ``owl_lambda`` (λ) are OWL's;
    ``blocks``: a given allocation's sparsity of each block, in block order (``source``: the file
    it was read from)."""

    kind: str = "uniform"
    owl_m: float = OWL_M
    owl_lambda: float = OWL_LAMBDA
    blocks: tuple[float, ...] | None = None
    source: str | None = field(default=None, compare=False)  # where it was read: not what it is

    def checked(self) -> "Allocation":
        if self.kind not in ALLOCATIONS:
            raise ConfigError(f"--allocation must be uniform, owl or a file of block sparsities, "
                              f"got {self.kind!r}")
        if self.kind == "given":
            _check_blocks(self.blocks, self.source or "the given allocation")
        if self.kind != "owl" and (self.owl_m, self.owl_lambda) != (OWL_M, OWL_LAMBDA):
            # OWL's parameters mean nothing here: kept at their defaults, so equal
            # allocations compare (and are cached, and written) as equal
            return replace(self, owl_m=OWL_M, owl_lambda=OWL_LAMBDA).checked()
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

    def check_fits(self, shape: Structure) -> None:
        """An allocation spreads an unstructured sparsity: N:M fixes every block's."""
        if not self.uniform and shape.is_nm:
            raise ConfigError(f"--allocation {self.kind} spreads an unstructured sparsity over "
                              f"the blocks; {shape.describe()} fixes every block's")

    def describe(self) -> str:
        if self.uniform:
            return "uniform"
        if self.kind == "given":
            return f"given ({len(self.blocks)} blocks{', ' + self.source if self.source else ''})"
        return f"owl (M {self.owl_m:g}, λ {self.owl_lambda:g})"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.kind != "given":
            del d["blocks"], d["source"]
        else:
            d["blocks"] = list(self.blocks)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "Allocation":
        """An allocation as ``as_dict`` wrote it (a recipe file, a run's config), checked."""
        if not isinstance(d, dict) or set(d) - {"kind", "owl_m", "owl_lambda", "blocks", "source"}:
            raise ConfigError(f"{where}: an allocation is an object with kind, owl_m, owl_lambda "
                              f"(and blocks for a given one), got {str(d)[:200]}")
        blocks = d.get("blocks")
        return cls(d.get("kind", "uniform"), d.get("owl_m", OWL_M), d.get("owl_lambda", OWL_LAMBDA),
                   tuple(blocks) if isinstance(blocks, list) else blocks, d.get("source")).checked()


def allocation_option(value: str, owl_m: float | None = None, owl_lambda: float | None = None
                      ) -> Allocation:
    """``--allocation``: uniform, owl, or a JSON file of block sparsities (a list of numbers, an
    object with ``block_sparsity``, or a prune report holding an ``allocation``), checked."""
    m = OWL_M if owl_m is None else owl_m
    lam = OWL_LAMBDA if owl_lambda is None else owl_lambda
    if value in ("uniform", "owl"):
        return Allocation(value, m, lam).checked()
    path = user_path(value)
    if not path.is_file():
        raise ConfigError(f"--allocation must be uniform, owl or a file of block sparsities; "
                          f"{value!r} is neither (no such file)")
    obj = read_json(path, "allocation file")
    if isinstance(obj, dict):
        obj = obj.get("allocation", obj)
        obj = obj.get("block_sparsity", obj) if isinstance(obj, dict) else obj
    return Allocation("given", m, lam, tuple(obj) if isinstance(obj, list) else obj,
                      str(value)).checked()


def _check_blocks(blocks: Any, where: str) -> None:
    if not isinstance(blocks, tuple) or not blocks:
        raise ConfigError(f"{where}: give the block sparsities as a non-empty list of numbers "
                          "(or an object with block_sparsity)")
    for s in blocks:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 < s < 1.0:
            raise ConfigError(f"{where}: a block sparsity must be a number in (0, 1), got {s!r}")


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
    if allocation.kind == "given":
        return _given(allocation, target, len(blocks))

    def wanda(name: str) -> Callable[[], torch.Tensor]:
        w = linears[name].weight
        return lambda: w.detach().abs().float() * stats[name]["X"].to(w.device, torch.float32).sqrt()

    ratios = [outlier_ratio([wanda(n) for n in linears if block_index(n, prefix) == b],
                            allocation.owl_m) for b in blocks]
    return owl_sparsities(ratios, target, allocation.owl_lambda)


def linear_sparsities(allocation: Allocation, target: float, linears: Mapping[str, Any],
                      stats: Mapping[str, Mapping[str, torch.Tensor]], prefix: str
                      ) -> dict[str, float] | None:
    """Each linear's sparsity under ``allocation``; None when uniform (the structure's own)."""
    if allocation.uniform:
        return None
    return per_linear(block_sparsities(allocation, target, linears, stats, prefix), linears,
                      prefix)


def per_linear(sparsities: Sequence[float], linears: Mapping[str, Any], prefix: str
               ) -> dict[str, float]:
    """Each linear's sparsity: its block's."""
    blocks = sorted({block_index(n, prefix) for n in linears})
    of = dict(zip(blocks, sparsities))
    return {n: of[block_index(n, prefix)] for n in linears}


def _given(allocation: Allocation, target: float, blocks: int) -> list[float]:
    """A given allocation, if it fits the model and the requested sparsity."""
    given = [float(s) for s in allocation.blocks]
    where = allocation.source or "the given allocation"
    if len(given) != blocks:
        raise ConfigError(f"{where} gives {len(given)} block sparsities; the model has {blocks} "
                          "decoder blocks")
    mean = math.fsum(given) / len(given)
    if abs(mean - target) > MEAN_TOLERANCE:
        raise ConfigError(f"{where}: the block sparsities average {mean:.6f}, not the requested "
                          f"sparsity {target:g}")
    return given
