"""SparseGPT (Frantar & Alistarh, 2023) as a baseline: unlike the metric methods it also
updates the remaining weights (OBS reconstruction), layer after layer, each block seeing
the outputs of the already pruned blocks before it."""
from __future__ import annotations

import torch
from torch import nn

from .layerwise import accumulate_inputs, block_linears, walk
from .masks import Structure


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


def sparsegpt_weight(W: torch.Tensor, H: torch.Tensor, structure: Structure,
                     blocksize: int = BLOCKSIZE, percdamp: float = 0.01,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
    """The pruned-and-updated weight (float32) for one layer; pure function of W and H. With
    ``mask`` (True = zero), the OBS update runs under that fixed mask instead of choosing one:
    any metric's masks, followed by SparseGPT's reconstruction of the weights it keeps."""
    W = W.detach().clone().float()
    H = H.clone()
    cols = W.shape[1]
    if structure.is_nm:  # whole N:M groups per block (2:4 and 4:8 keep 128), never cut at its edge
        blocksize = max(structure.m, blocksize - blocksize % structure.m)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    prune_m = structure.m
    prune_k = structure.m - structure.n  # how many of each group of m are zeroed
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1)
        if mask is not None:
            mask1 = mask[:, i1:i2].to(W1.device)
        elif not structure.is_nm:
            tmp = W1 ** 2 / d1.reshape(1, -1) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * structure.sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w = W1[:, i]
            if mask is None and structure.is_nm and i % prune_m == 0:
                tmp = W1[:, i:i + prune_m] ** 2 / d1[i:i + prune_m].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prune_k, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W


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
