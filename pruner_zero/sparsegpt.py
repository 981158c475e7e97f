"""SparseGPT (Frantar & Alistarh, 2023) as a baseline: unlike the metric methods it also
updates the remaining weights (OBS reconstruction), layer after layer, each block seeing
the outputs of the already pruned blocks before it."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .layerwise import accumulate_inputs, block_linears, walk
from .masks import Structure, cpu_pool


SPARSEGPT = "sparsegpt"
"""The method's name wherever a metric is named (prune, compare): a method, not a formula."""
BLOCKSIZE = 128
"""Input columns whose masks SparseGPT chooses together (over all rows), as published."""


class HessianAccumulator:
    """H = 2/n * sum x x^T over the n calibration sequences seen (SparseGPT's running form)."""

    def __init__(self, columns: int, device: torch.device):
        self.H = torch.zeros(columns, columns, dtype=torch.float32, device=device)
        self.n = 0

    def add(self, inp: torch.Tensor) -> None:
        batch = inp.shape[0] if inp.dim() == 3 else 1
        x = inp.detach().reshape(-1, inp.shape[-1]).t().float()
        self.H *= self.n / (self.n + batch)
        self.n += batch
        x = (2 / self.n) ** 0.5 * x
        self.H += x @ x.t()


Chooser = Callable[[torch.Tensor, int, int], torch.Tensor]
"""``choose(W_cols, start, stop)``: the mask (True = zero) of input columns [start, stop), given
their weights as the sweep has updated them so far. Called once per block of ``BLOCKSIZE``
columns (unstructured) or once per group of M columns (N:M), before those columns are pruned."""


def inverse_hessian_factor(H: torch.Tensor, percdamp: float = 0.01
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's upper Cholesky factor of the damped inverse Hessian, and the dead input
    columns (never active: their weights are zeroed, as SparseGPT does)."""
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], device=H.device)
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)),
                                 upper=True), dead


def obs_curvature(H: torch.Tensor, percdamp: float = 0.01,
                  factor: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The terminal H: 1 / [chol(H⁻¹)]_jj² per input column, the curvature in SparseGPT's
    saliency w² / [chol(H⁻¹)]_jj² (so ``mul(sqr(W), H)`` ranks as SparseGPT does). It is X's
    diagonal of the Hessian conditioned on the columns after j (what OBS can still repair).
    ``factor``: ``inverse_hessian_factor(H, percdamp)`` if the caller has it already."""
    upper, _ = inverse_hessian_factor(H, percdamp) if factor is None else factor
    return 1 / torch.diag(upper) ** 2


def sparsegpt_choice(structure: Structure, d: torch.Tensor) -> Chooser:
    """SparseGPT's own selection, given the factor's diagonal ``d``: the lowest w²/d² of a
    block (all rows together), or of each row's group of M."""
    def choose(W1: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        tmp = W1 ** 2 / d[start:stop].reshape(1, -1) ** 2
        if structure.is_nm:
            mask = torch.zeros_like(W1, dtype=torch.bool)
            prune_k = structure.m - structure.n  # how many of each group of m are zeroed
            return mask.scatter_(1, torch.topk(tmp, prune_k, dim=1, largest=False)[1], True)
        thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * structure.sparsity)]
        return tmp <= thresh
    return choose


def obs_sweep(W: torch.Tensor, H: torch.Tensor, structure: Structure,
              choose: Chooser | None = None, blocksize: int = BLOCKSIZE,
              percdamp: float = 0.01, mask: torch.Tensor | None = None,
              factor: tuple[torch.Tensor, torch.Tensor] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT's sweep over the input columns, block by block: each block's mask is chosen
    (``choose``, on the weights as updated so far; None: SparseGPT's own choice) or given
    (``mask``, True = zero), then its columns are pruned one by one, the error of each spread
    over the columns after it (OBS). Returns the new weight (float32) and the mask used; a pure
    function of W and H. ``factor``: ``inverse_hessian_factor(H, percdamp)`` if the caller has
    it already (it is the costly part of a small layer)."""
    W = W.detach().clone().float()
    cols = W.shape[1]
    if structure.is_nm:  # whole N:M groups per block (2:4 and 4:8 keep 128), never cut at its edge
        blocksize = max(structure.m, blocksize - blocksize % structure.m)
    Hinv, dead = inverse_hessian_factor(H, percdamp) if factor is None else factor
    W[:, dead] = 0
    if mask is None and choose is None:
        choose = sparsegpt_choice(structure, torch.diag(Hinv))
    used = torch.zeros_like(W, dtype=torch.bool)
    step = structure.m if structure.is_nm else blocksize  # columns chosen together
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        mask1 = used[:, i1:i2]
        if mask is not None:
            mask1.copy_(mask[:, i1:i2].to(W1.device))
        for i in range(i2 - i1):
            if mask is None and i % step == 0:
                stop = min(i + step, i2 - i1)
                mask1[:, i:stop] = choose(W1[:, i:stop], i1 + i, i1 + stop)
            w = W1[:, i]
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W, used


def sparsegpt_weight(W: torch.Tensor, H: torch.Tensor, structure: Structure,
                     blocksize: int = BLOCKSIZE, percdamp: float = 0.01,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """The pruned-and-updated weight (float32) for one layer; pure function of W and H. With
    ``mask`` (True = zero), the OBS update runs under that fixed mask instead of choosing one:
    any metric's masks, followed by SparseGPT's reconstruction of the weights it keeps."""
    return obs_sweep(W, H, structure, blocksize=blocksize, percdamp=percdamp, mask=mask)[0]


@torch.no_grad()
def sparsegpt_prune(model: nn.Module, calib: torch.Tensor, structure: Structure,
                    progress: bool = True) -> None:
    """Prune `model` in place with SparseGPT using calibration windows [n, seqlen]."""

    def visit(i: int, block: nn.Module, run) -> None:
        linears = block_linears(block)
        acc = accumulate_inputs(linears, lambda m: HessianAccumulator(m.in_features, m.weight.device),
                                run)
        for n, m in linears.items():
            m.weight.copy_(sparsegpt_weight(m.weight, acc[n].H, structure).to(m.weight.dtype))

    walk(model, calib, visit, progress, desc="sparsegpt")


LSQ_CHUNK_ELEMENTS = 1 << 25
"""Entries of the rows' kept-column Hessians factored at once (128 MB in float32)."""


def _factor_solve(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A⁻¹b for a batch of positive definite A. On a CPU the batch is split over the threads,
    each factoring with one BLAS thread: oneMKL threads each small Cholesky on its own and
    spends most of it waiting (measured here: 1120 matrices of 173², 8.4 s at 2 threads against
    0.45 s split over 2)."""
    def solve(part: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return torch.cholesky_solve(part[1], torch.linalg.cholesky(part[0]))

    threads = torch.get_num_threads()
    if A.device.type != "cpu" or threads < 2 or A.shape[0] < 2:
        return solve((A, b))
    pool = cpu_pool()  # first, so that a pool made here gets a worker per thread
    torch.set_num_threads(1)
    try:
        return torch.cat(list(pool.map(solve, zip(A.chunk(threads), b.chunk(threads)))))
    finally:
        torch.set_num_threads(threads)


def lsq_weight(W: torch.Tensor, H: torch.Tensor, mask: torch.Tensor,
               percdamp: float = 0.01) -> torch.Tensor:
    """The weight that reconstructs the layer's outputs best under a fixed ``mask`` (True =
    zero): for each row, min (w - w0)ᵀ(H + λI)(w - w0) with w = 0 on the mask, solved exactly
    (w_K = w0_K + H_KK⁻¹ H_KP w0_P over its kept columns K and pruned ones P), with SparseGPT's
    damping λ and dead columns. SparseGPT's sweep spreads each pruned weight's error over the
    columns to its right only; this solves all kept columns together. Float32, a pure function."""
    W0 = W.detach().clone().float()
    Hd = H.detach().clone().float()
    dead = torch.diag(Hd) == 0
    Hd[dead, dead] = 1
    Hd += percdamp * torch.mean(torch.diag(Hd)) * torch.eye(Hd.shape[0], device=Hd.device)
    W0[:, dead] = 0
    mask = mask.to(W0.device)
    keep = ~mask
    rhs = (W0 * mask) @ Hd  # row r: H_{:,P} w0_P, read on K below
    counts = keep.sum(1)
    out = W0 * keep
    if not counts.numel() or int(counts.max()) == 0:
        return out
    # each row's kept columns first (in order); rows widest first, so a chunk pads its rows
    # only to its own widest (rows ranked over a layer keep very unequal counts)
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True)[1]
    sorted_counts, by_count = torch.sort(counts, descending=True, stable=True)
    widths = sorted_counts.tolist()
    s = 0
    while s < len(widths) and widths[s] > 0:
        width = widths[s]
        rows = by_count[s:s + max(1, LSQ_CHUNK_ELEMENTS // (width * width))]
        s += rows.numel()
        idx = order[rows, :width]
        ok = torch.arange(width, device=W0.device)[None, :] < counts[rows, None]
        A = Hd[idx[:, :, None], idx[:, None, :]]
        b = rhs[rows].gather(1, idx)
        if not bool(ok.all()):  # a narrower row's padding: an identity block, no coupling
            A.masked_fill_(~(ok[:, :, None] & ok[:, None, :]), 0)
            A.diagonal(dim1=-2, dim2=-1).masked_fill_(~ok, 1)
            b.masked_fill_(~ok, 0)
        delta = _factor_solve(A, b[..., None])[..., 0]
        out[rows[:, None].expand_as(idx)[ok], idx[ok]] += delta[ok]
    return out
