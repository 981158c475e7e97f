"""The terminals of every metric, per prunable linear: W (from the model), X and G (computed here).

- X[j]: mean over calibration tokens of the squared input activation of column j (Wanda's
  `scaler_row`, but a true mean over tokens rather than a sum divided by sequences).
- G[i, j]: l2 norm over calibration samples of dLoss_s/dW[i, j], one backward per sample
  (GBLM-Pruner / Pruner-Zero; unscaled: GBLM's factor 100 is in its metric's alpha instead).

The pure accumulators below know nothing of models; `compute_stats` feeds them from hooks.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .files import atomic_write_with, user_path


LayerStats = dict[str, torch.Tensor]
"""One layer's statistics by terminal name: X [in] and G [out, in], float32 (more where a
registered terminal reads another statistic)."""
COMPUTED = ("X", "G")
"""The statistics ``compute_stats`` measures and the cache holds."""


class SquaredInputMean:
    """Running mean of x**2 per input column over all tokens seen."""

    def __init__(self, in_features: int, device: torch.device):
        self.total = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, inp: torch.Tensor) -> None:
        flat = inp.detach().reshape(-1, inp.shape[-1]).to(torch.float64)
        self.total += (flat * flat).sum(dim=0)
        self.tokens += flat.shape[0]

    def value(self) -> torch.Tensor:
        return (self.total / max(self.tokens, 1)).to(torch.float32)


class GradientNorm:
    """l2 norm over samples of per-sample gradients: sqrt(sum_s g_s**2)."""

    def __init__(self, shape: torch.Size, device: torch.device):
        self.sum_sq = torch.zeros(shape, dtype=torch.float32, device=device)

    def add(self, grad: torch.Tensor) -> None:
        g = grad.detach().to(torch.float32)
        self.sum_sq.addcmul_(g, g)

    def value(self) -> torch.Tensor:
        return self.sum_sq.sqrt()


def compute_stats(model: nn.Module, linears: dict[str, nn.Linear], calib: torch.Tensor,
                  progress: bool = True) -> dict[str, LayerStats]:
    """One forward+backward per calibration window, on the dense model."""
    from .model import input_device

    xs = {n: SquaredInputMean(m.in_features, m.weight.device) for n, m in linears.items()}
    gs = {n: GradientNorm(m.weight.shape, m.weight.device) for n, m in linears.items()}
    wanted = {id(m.weight) for m in linears.values()}
    saved_flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():  # gradients only where a metric reads them
        p.requires_grad_(id(p) in wanted)
    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: xs[n].add(args[0]))
             for n, m in linears.items()]
    dev = input_device(model)
    try:
        for window in tqdm(calib, desc="statistics W/G/X", unit="sample", disable=not progress):
            ids = window.unsqueeze(0).to(dev)
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            for n, m in linears.items():
                gs[n].add(m.weight.grad)
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        for p, flag in saved_flags.items():
            p.requires_grad_(flag)
    return {n: {"X": xs[n].value(), "G": gs[n].value()} for n in linears}


def cache_key(model_id: str, calib: torch.Tensor, extra: dict | None = None) -> str:
    """Hash of what the statistics depend on: the model and the exact calibration tokens
    (which already encode data, split, nsamples, seqlen and seed)."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_id, **(extra or {})}, sort_keys=True).encode())
    h.update(calib.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def model_identity(name_or_path: str, revision: str | None = None) -> str:
    """A local model is identified by its weight files' sizes and mtimes, a hub model by its id
    and revision (the loaders ignore a revision for a local directory)."""
    path = user_path(name_or_path)
    if not path.is_dir():
        return name_or_path if revision is None else f"{name_or_path}@{revision}"
    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".json"})
    return json.dumps([str(path.resolve())] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                               for p in files])


def save_stats(stats: dict[str, LayerStats], path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, s in stats.items():
        for key in COMPUTED:
            tensors[f"{name}::{key}"] = s[key].contiguous().cpu()
    # atomic, under a name of its own: a killed run never leaves a half-written cache, and two
    # runs computing the same statistics never write into one file
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def stats_key_of(path: Path) -> str | None:
    """The cache key a statistics file says it was computed for (None: an older or foreign file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return (fh.metadata() or {}).get("key")


def load_stats(path: Path, linears: dict[str, nn.Linear]) -> dict[str, LayerStats] | None:
    """The cached statistics, or None when the file does not match these layers."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    out = {}
    for name, m in linears.items():
        x, g = tensors.get(f"{name}::X"), tensors.get(f"{name}::G")
        if x is None or g is None or g.shape != m.weight.shape:
            return None
        out[name] = {"X": x.to(m.weight.device), "G": g.to(m.weight.device)}
    return out


def get_stats(model: nn.Module, linears: dict[str, nn.Linear], calib: torch.Tensor,
              model_id: str, cache_dir: Path | None, progress: bool = True,
              log=print, revision: str | None = None) -> dict[str, LayerStats]:
    """Statistics from the on-disk cache when present, else computed and cached."""
    if cache_dir is None:
        return compute_stats(model, linears, calib, progress)
    dtype = str(next(model.parameters()).dtype)
    key = cache_key(model_identity(model_id, revision), calib, {"dtype": dtype})
    path = Path(cache_dir) / f"stats-{key}.safetensors"
    if path.is_file():
        cached = None
        try:
            found = stats_key_of(path)
            if found != key:  # a file copied or renamed under this name: never trust it
                log(f"warning: statistics cache {path} was computed for "
                    f"{'another calibration' if found else 'an unknown calibration'} "
                    f"(key {found}, expected {key}); recomputing")
            else:
                cached = load_stats(path, linears)
                if cached is None:
                    log(f"warning: statistics cache {path} does not match this model's layers; "
                        "recomputing")
        except Exception as exc:  # a truncated or foreign file: say so, then rebuild it
            log(f"warning: statistics cache {path} is unreadable ({type(exc).__name__}); recomputing")
        if cached is not None:
            log(f"statistics: loaded from cache {path}")
            return cached
    stats = compute_stats(model, linears, calib, progress)
    save_stats(stats, path, {"key": key, "model": model_id, "nsamples": str(calib.shape[0]),
                             "seqlen": str(calib.shape[1])})
    log(f"statistics: cached in {path}")
    return stats
