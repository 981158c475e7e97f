"""Scores -> boolean prune masks (True = zero this weight). Pure tensor functions."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class Structure:
    """What a mask may look like: unstructured at `sparsity` (compared per row or per layer),
    or N:M (keep N of every M consecutive input weights; prune M-N)."""

    sparsity: float
    compare: str = "row"  # "row" | "layer"
    n: int = 0
    m: int = 0

    @property
    def is_nm(self) -> bool:
        return self.m > 0

    def describe(self) -> str:
        return f"{self.n}:{self.m}" if self.is_nm else f"unstructured {self.sparsity:g} per {self.compare}"


def parse_structure(structure: str, sparsity: float | None, compare: str = "row") -> Structure:
    """Validate the CLI's --structure/--sparsity/--compare into a Structure."""
    if not isinstance(structure, str):
        raise ConfigError(f"--structure must be unstructured or N:M, got {structure!r}")
    if sparsity is not None and (isinstance(sparsity, bool) or not isinstance(sparsity, (int, float))):
        raise ConfigError(f"--sparsity must be a number, got {sparsity!r}")
    if compare not in ("row", "layer"):
        raise ConfigError(f"--compare must be row or layer, got {compare!r}")
    if structure == "unstructured":
        s = 0.5 if sparsity is None else float(sparsity)
        if not 0.0 < s < 1.0:
            raise ConfigError(f"--sparsity must be strictly between 0 and 1, got {sparsity}")
        return Structure(sparsity=s, compare=compare)
    parts = structure.split(":")
    if len(parts) != 2 or not all(re.fullmatch(r"[0-9]{1,6}", p) for p in parts):
        raise ConfigError(f"--structure must be unstructured or N:M (e.g. 2:4), got {structure!r}")
    n, m = int(parts[0]), int(parts[1])
    if compare != "row":
        raise ConfigError(f"--compare {compare} applies to unstructured sparsity only; N:M "
                          f"{structure} always compares within groups of {m} inputs of a row")
    if not 0 < n < m:
        raise ConfigError(f"--structure {structure}: N:M needs 0 < N < M (keep N of every M weights)")
    implied = 1 - n / m
    if sparsity is not None and abs(float(sparsity) - implied) > 1e-9:
        raise ConfigError(f"--structure {structure} implies sparsity {implied:g}, "
                          f"but --sparsity {sparsity} was given; drop one of them")
    return Structure(sparsity=implied, n=n, m=m)


def check_fits(widths, structure: Structure) -> None:
    """N:M needs every layer's input width divisible by M: say so before any work is done."""
    if structure.is_nm:
        bad = sorted({w for w in widths if w % structure.m})
        if bad:
            raise ConfigError(f"N:M {structure.n}:{structure.m} needs input widths divisible by "
                              f"{structure.m}; this model has layers of width {bad}")


def unstructured_mask(scores: torch.Tensor, sparsity: float, compare: str = "row") -> torch.Tensor:
    """Prune the int(k * sparsity) lowest scores of each row (k = row length) or of the layer.
    Ties are broken by position (stable sort) so masks are reproducible."""
    if compare == "row":
        k = int(scores.shape[1] * sparsity)
        return lowest_per_row(scores, k) if k > 0 else torch.zeros_like(scores, dtype=torch.bool)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    k = int(scores.numel() * sparsity)
    mask.view(-1)[torch.sort(scores.flatten(), stable=True).indices[:k]] = True
    return mask


def lowest_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k lowest scores of each row, ties broken by position: what a stable sort's first k
    give, from a selection (kthvalue) instead of a sort: the k-th value is the threshold, every
    score below it is in, and of the scores equal to it the leftmost ones fill the rest."""
    threshold = scores.kthvalue(k, dim=1, keepdim=True).values
    below = scores < threshold
    tied = scores == threshold
    return below | (tied & (tied.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In every group of m consecutive inputs of a row, prune the m-n lowest scores."""
    rows, cols = scores.shape
    if cols % m:
        raise ConfigError(f"N:M {n}:{m} needs input width divisible by {m}; a layer has {cols}")
    groups = scores.reshape(rows, cols // m, m)
    idx = torch.sort(groups, dim=2, stable=True).indices[:, :, : m - n]
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, idx, True)
    return mask.reshape(rows, cols)


def make_mask(scores: torch.Tensor, structure: Structure) -> torch.Tensor:
    if structure.is_nm:
        return nm_mask(scores, structure.n, structure.m)
    return unstructured_mask(scores, structure.sparsity, structure.compare)
