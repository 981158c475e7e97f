"""Probe (issue #20): does the exact reconstruction under a fixed mask beat SparseGPT's own
update at 2:4? SparseGPT's column sweep spreads each pruned weight's error over the columns to
its right only (greedy OBS); under the same mask and the same damped Hessian the least-squares
weight min (W-W0)(H+λI)(W-W0)^T, W = 0 off the mask, is reached here by ADMM (Boža, 2024,
"Fast and Effective Weight Update for Pruned LLMs"; written from the paper's equations).

Walks the blocks as SparseGPT does (each block's inputs from the pruned blocks before it); per
linear it takes SparseGPT's mask (or another's: --mask wanda) and its weight, then re-solves the
kept weights from the dense W0 with ADMM warm-started at SparseGPT's weight. Prints per-layer
reconstruction errors and the perplexity on `valid` windows clear of calibration (selection
data: no `test`).

  python experiments/admm_probe.py --model models/SmolLM2-135M-Instruct.Q4_1.gguf --shape 2:4
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pruner_zero.evaluate import perplexity
from pruner_zero.layerwise import accumulate_inputs, block_linears, walk
from pruner_zero.masks import parse_structure
from pruner_zero.sparsegpt import HessianAccumulator, obs_sweep
from pruner_zero.workbench import Protocol, Workbench


def damped(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    return H + percdamp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], dtype=H.dtype)


def admm_weight(W0: torch.Tensor, H: torch.Tensor, keep: torch.Tensor, start: torch.Tensor,
                iters: int, rho0: float, growth: float) -> torch.Tensor:
    """min (W-W0) H (W-W0)^T s.t. W = 0 where not ``keep``; H already damped (float64)."""
    lam, Q = torch.linalg.eigh(H)
    scale = lam.mean()
    B = W0 @ H
    Z, U = start * keep, torch.zeros_like(W0)
    rho = rho0 * scale
    for _ in range(iters):
        W = ((B + rho * (Z - U)) @ Q / (lam + rho)) @ Q.T
        Z = (W + U) * keep
        U = U + W - Z
        rho *= growth
    return Z


def error(W: torch.Tensor, W0: torch.Tensor, H: torch.Tensor) -> float:
    D = W - W0
    return float(((D @ H) * D).sum())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", default="../shared/data/wikitext-2")
    ap.add_argument("--shape", default="2:4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rho", type=float, default=0.1)
    ap.add_argument("--growth", type=float, default=1.15)
    ap.add_argument("--percdamp", type=float, default=0.01)
    ap.add_argument("--mode", default="both", choices=["sparsegpt", "admm", "both"])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    shape = "unstructured" if ":" not in a.shape else a.shape
    sparsity = float(a.shape) if ":" not in a.shape else None
    structure = parse_structure(shape, sparsity, "row")
    wb = Workbench(Protocol(model=a.model, data_dir=a.data_dir, calib_split="valid",
                            nsamples=a.nsamples, seqlen=256, seed=a.seed, device="cpu"),
                   cache_dir=Path.home() / ".cache" / "pruner_zero", progress=False)
    windows = wb.split_windows("valid", a.windows, spread=True)
    dense = {n: m.weight.detach().clone() for n, m in wb.model.named_modules()
             if isinstance(m, torch.nn.Linear)}
    results = {"args": vars(a), "ppl": {}, "layers": []}
    modes = ["sparsegpt", "admm"] if a.mode == "both" else [a.mode]
    for mode in modes:
        for n, m in wb.model.named_modules():  # the dense model again
            if n in dense:
                m.weight.data.copy_(dense[n])
        t0 = time.time()

        def visit(i, block, run):
            linears = block_linears(block)
            acc = accumulate_inputs(linears, lambda m: HessianAccumulator(m.in_features, m.weight.device), run)
            for n, m in linears.items():
                H = acc[n].H
                W0 = m.weight.detach().float()
                Wg, mask = obs_sweep(W0, H, structure, percdamp=a.percdamp)
                if mode == "admm":
                    Hd = damped(H.double(), a.percdamp)
                    W = admm_weight(W0.double(), Hd, ~mask, Wg.double(), a.iters, a.rho, a.growth)
                    eg, ea = error(Wg.double(), W0.double(), Hd), error(W, W0.double(), Hd)
                    results["layers"].append({"block": i, "linear": n, "sparsegpt": eg, "admm": ea})
                    if i < 2 or i % 10 == 0:
                        print(f"block {i} {n}: error sparsegpt {eg:.4g} admm {ea:.4g} ({ea / eg:.3f})", flush=True)
                    Wg = W.float()
                m.weight.data.copy_(Wg.to(m.weight.dtype))

        walk(wb.model, wb.calib, visit, progress=False)
        prune_s = time.time() - t0
        with torch.no_grad():
            ppl = perplexity(wb.model, windows)
        results["ppl"][mode] = ppl
        print(f"{mode}: ppl {ppl:.4f} on {windows.shape[0]} valid windows (prune {prune_s:.0f} s)", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
