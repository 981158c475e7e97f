"""Scores -> boolean prune masks (True = zero this weight), and the fingerprint of a model's masks.
Pure tensor functions."""
from __future__ import annotations

import hashlib
import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
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
    return lowest_of_layer(scores, int(scores.numel() * sparsity))


def lowest_of_layer(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k lowest scores of the whole tensor, ties broken by position (stable sort)."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.view(-1)[torch.sort(scores.flatten(), stable=True).indices[:k]] = True
    return mask


def lowest_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k lowest scores of each row, ties broken by position: what a stable sort's first k
    give, from a selection instead of a sort. The k-th value is each row's threshold; a row with
    no tie at it keeps exactly the scores up to it, and in a row with ties the scores below it
    are in and the leftmost of those equal to it fill the rest."""
    threshold = _kth_per_row(scores, k)
    at_most = scores <= threshold
    extra = at_most.sum(dim=1) - k  # > 0 only where the threshold is tied
    tied_rows = extra.nonzero().flatten()
    if tied_rows.numel():
        at_most[tied_rows] = _leftmost_ties(scores[tied_rows], threshold[tied_rows], k)
    return at_most


def _kth_per_row(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's k-th smallest value, as a column. On the CPU numpy's introselect, a few rows
    per thread, is 2-4x faster than ``kthvalue`` on these shapes; the value is the same."""
    if scores.device.type != "cpu" or scores.dtype not in _NUMPY_SELECT:
        return scores.kthvalue(k, dim=1, keepdim=True).values
    rows = scores.detach().numpy()
    out = np.empty((rows.shape[0], 1), dtype=rows.dtype)

    def select(lo: int, hi: int) -> None:  # numpy releases the GIL while it partitions
        out[lo:hi, 0] = np.partition(rows[lo:hi], k - 1, axis=1)[:, k - 1]

    spans = _row_spans(rows.shape[0], torch.get_num_threads())
    if len(spans) == 1:
        select(*spans[0])
    else:
        list(cpu_pool().map(lambda span: select(*span), spans))
    return torch.from_numpy(out)


def _leftmost_ties(scores: torch.Tensor, threshold: torch.Tensor, k: int) -> torch.Tensor:
    below = scores < threshold
    tied = scores == threshold
    return below | (tied & (tied.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))


_NUMPY_SELECT = (torch.float32, torch.float64)


def _row_spans(rows: int, threads: int) -> list[tuple[int, int]]:
    parts = max(1, min(threads, rows // 64))
    edges = [rows * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:]))


@lru_cache(maxsize=None)
def cpu_pool() -> ThreadPoolExecutor:
    """One pool, a worker per torch thread, for CPU work split by hand (row selection here,
    the lsq solves in sparsegpt): made once, not per call."""
    return ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads()),
                              thread_name_prefix="pruner-zero-cpu")


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


def block_mask(scores: torch.Tensor, structure: Structure, start: int, stop: int,
               width: int) -> torch.Tensor:
    """The mask of columns [start, stop) of a layer ``width`` wide, chosen on their scores
    alone (a sweep chooses block after block): N:M groups as ``nm_mask``; unstructured, each
    block prunes its share of what ``make_mask`` prunes on the whole layer (per row, or over
    the layer), shares rounded so that the blocks add up to that count exactly."""
    if structure.is_nm:
        return nm_mask(scores, structure.n, structure.m)
    rows = scores.shape[0]
    if structure.compare == "row":
        total = int(width * structure.sparsity)
        k = total * stop // width - total * start // width
        return lowest_per_row(scores, k) if k > 0 else torch.zeros_like(scores, dtype=torch.bool)
    total = int(rows * width * structure.sparsity)
    return lowest_of_layer(scores, total * stop // width - total * start // width)


_SHIFTS: dict[torch.device, torch.Tensor] = {}


def _shifts(device: torch.device) -> torch.Tensor:
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, device=device, dtype=torch.uint8)
    return _SHIFTS[device]


def packbits(mask: torch.Tensor) -> torch.Tensor:
    """A boolean tensor as 1 bit per element (uint8, little-endian within a byte)."""
    if mask.device.type == "cpu" and mask.dtype == torch.bool:  # numpy's: one pass, same bytes
        return torch.from_numpy(np.packbits(mask.contiguous().numpy().reshape(-1),
                                            bitorder="little"))
    flat = mask.flatten().to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8) << _shifts(flat.device)).sum(dim=1, dtype=torch.uint8)


def unpackbits(packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The inverse of ``packbits``."""
    if packed.device.type == "cpu":
        n = math.prod(shape)
        return torch.from_numpy(np.unpackbits(packed.numpy(), count=n, bitorder="little")
                                .view(np.bool_)).view(shape)
    bits = (packed.unsqueeze(1) >> _shifts(packed.device)) & 1
    return bits.flatten()[:math.prod(shape)].view(shape).bool()


class Fingerprint:
    """Hash of a model's masks, fed one layer at a time in any order: equal fingerprints mean the
    same pruned model. Each layer is hashed alone (its bits packed on the mask's device first, so
    a GPU sends 1/8 of the bytes to the host), and the digests are combined in name order."""

    def __init__(self, keep_packed: bool = False) -> None:
        self._layers: dict[str, bytes] = {}
        self.packed: dict[str, tuple[torch.Tensor, torch.Size]] | None = {} if keep_packed else None

    def add(self, name: str, mask: torch.Tensor) -> None:
        self.add_packed(name, packbits(mask), mask.shape)

    def add_packed(self, name: str, packed: torch.Tensor, shape: torch.Size) -> None:
        """A layer's mask already packed by ``packbits`` (a prune keeps the packed bits too)."""
        packed = packed.cpu()
        h = hashlib.sha256(name.encode())
        h.update(packed.numpy().tobytes())
        self._layers[name] = h.digest()
        if self.packed is not None:
            self.packed[name] = (packed, shape)

    def hexdigest(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self._layers):
            h.update(self._layers[name])
        return h.hexdigest()


def mask_fingerprint(masks: dict[str, torch.Tensor]) -> str:
    """The fingerprint of a dict of masks (what ``Engine.prune`` returns for the same masks)."""
    fp = Fingerprint()
    for name, mask in masks.items():
        fp.add(name, mask)
    return fp.hexdigest()


@dataclass(frozen=True)
class PackedMasks:
    """A model's masks at 1 bit per weight on the host, with their fingerprint: what a search
    fingerprints a candidate with, kept to prune with later instead of scoring it again. When an
    update's walk made them (the sweep; obs with sequential calibration), ``walked`` may hold
    the weights the walk left outside the masks, so the model is put back without walking again."""
    fingerprint: str
    layers: dict[str, tuple[torch.Tensor, torch.Size]]
    walked: dict[str, torch.Tensor] | None = None  # per layer: weight[~mask] after the update

    @property
    def mask_nbytes(self) -> int:
        return sum(p.numel() for p, _ in self.layers.values())

    @property
    def walked_nbytes(self) -> int:
        return 0 if self.walked is None else \
            sum(v.numel() * v.element_size() for v in self.walked.values())

    def without_walked(self) -> PackedMasks:
        return PackedMasks(self.fingerprint, self.layers)
