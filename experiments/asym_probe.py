"""Probe (#20): SparseGPT reconstructing each layer's *dense* output from its pruned inputs.

SparseGPT minimises ||W X~ - W' X~|| per layer, X~ the layer's inputs in the partly pruned model:
the error the earlier layers made is taken as given. The asymmetric target ||W X - W' X~||, X the
dense model's inputs, asks each layer to repair it too. Its least-squares solution without a
mask is W + W (C - H) H^-1 (H = X~ X~^T, C = X X~^T), so it is SparseGPT's sweep run on that
weight instead of W (||W X - V X~||^2 = const + ||(W* - V) X~||^2 for the least-squares W*).
This script measures SparseGPT and that variant on selection windows (valid, clear of the
calibration windows): the decision to build it is made on selection data, never `test`.

  python experiments/asym_probe.py --model ../shared/models/wiki-llama-5m --shape 2:4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pruner_zero.evaluate import perplexity  # noqa: E402
from pruner_zero.layerwise import block_inputs, block_linears  # noqa: E402
from pruner_zero.masks import parse_structure  # noqa: E402
from pruner_zero.model import decoder_layers  # noqa: E402
from pruner_zero.sparsegpt import inverse_hessian_factor, obs_sweep  # noqa: E402
from pruner_zero.workbench import Protocol, Workbench  # noqa: E402


class Cross:
    """H = 2/n sum x~ x~^T and C = 2/n sum x x~^T over the windows (x dense, x~ pruned)."""

    def __init__(self, cols: int):
        self.H = torch.zeros(cols, cols)
        self.C = torch.zeros(cols, cols)
        self.n = 0

    def add(self, pruned: torch.Tensor, dense: torch.Tensor) -> None:
        xp = pruned.reshape(-1, pruned.shape[-1]).float()
        xd = dense.reshape(-1, dense.shape[-1]).float()
        self.H *= self.n / (self.n + 1)
        self.C *= self.n / (self.n + 1)
        self.n += 1
        s = 2 / self.n
        self.H += s * xp.t() @ xp
        self.C += s * xd.t() @ xp


def target_weight(W: torch.Tensor, acc: Cross, percdamp: float = 0.01) -> torch.Tensor:
    H = acc.H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0])
    B = W.float() @ (acc.C - acc.H)
    return W.float() + torch.cholesky_solve(B.t(), torch.linalg.cholesky(H)).t()


@torch.no_grad()
def prune(model, calib, structure, asym: bool) -> None:
    inputs, kwargs = block_inputs(model, calib)
    dense_inputs = [x.clone() for x in inputs]
    for block in decoder_layers(model):
        linears = block_linears(block)
        seen = {n: [] for n in linears}
        hooks = [m.register_forward_hook(lambda mod, a, o, n=n: seen[n].append(a[0].detach()))
                 for n, m in linears.items()]
        dense_out = [_out(block(x, **kwargs)) for x in dense_inputs]
        for h in hooks:
            h.remove()
        acc = {n: Cross(m.in_features) for n, m in linears.items()}
        count = {n: 0 for n in linears}

        def hook(mod, a, o, n):
            acc[n].add(a[0], seen[n][count[n]] if asym else a[0])
            count[n] += 1
        hooks = [m.register_forward_hook(lambda mod, a, o, n=n: hook(mod, a, o, n))
                 for n, m in linears.items()]
        for x in inputs:
            block(x, **kwargs)
        for h in hooks:
            h.remove()
        for n, m in linears.items():
            W = target_weight(m.weight, acc[n]) if asym else m.weight
            factor = inverse_hessian_factor(acc[n].H)
            m.weight.copy_(obs_sweep(W, acc[n].H, structure, factor=factor)[0].to(m.weight.dtype))
        inputs = [_out(block(x, **kwargs)) for x in inputs]
        dense_inputs = dense_out


def _out(o):
    return o[0] if isinstance(o, tuple) else o


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", default="../shared/data/wikitext-2")
    ap.add_argument("--shape", default="2:4", help="a sparsity or N:M")
    ap.add_argument("--nsamples", type=int, default=32)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--windows", type=int, default=32, help="valid windows, clear of calibration")
    ap.add_argument("--out")
    args = ap.parse_args()
    nm = ":" in args.shape
    structure = parse_structure(args.shape if nm else "unstructured",
                                None if nm else float(args.shape))
    rows = []
    for seed in range(args.seeds):
        bench = Workbench(Protocol(model=args.model, data_dir=args.data_dir, calib_split="valid",
                                   nsamples=args.nsamples, seqlen=args.seqlen, seed=seed,
                                   device="cpu"), progress=False, log=lambda m: None)
        windows = bench.split_windows("valid", args.windows, spread=True)
        dense = {k: v.clone() for k, v in bench.model.state_dict().items()}
        for asym in (False, True):
            bench.model.load_state_dict(dense)
            t0 = time.perf_counter()
            prune(bench.model, bench.calib, structure, asym)
            took = time.perf_counter() - t0
            ppl = perplexity(bench.model, windows)
            rows.append({"seed": seed, "method": "sparsegpt-asym" if asym else "sparsegpt",
                         "shape": args.shape, "valid_ppl": ppl, "prune_s": took})
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
