"""The terminals of every metric, per prunable linear: W (from the model), X, G and H (computed
here).

- X[j]: mean over calibration tokens of the squared input activation of column j (Wanda's
  `scaler_row`, but a true mean over tokens rather than a sum divided by sequences).
- G[i, j]: l2 norm over calibration samples of dLoss_s/dW[i, j], one backward per sample
  (GBLM-Pruner / Pruner-Zero; unscaled: GBLM's factor 100 is in its metric's alpha instead).
- H[j]: 1 / [chol(H⁻¹)]_jj², the curvature of SparseGPT's saliency, from the Hessian 2/n·Σ x xᵀ
  of the layer's inputs (``sparsegpt.obs_curvature``); measured only where a metric reads it.

The pure accumulators below know nothing of models; `compute_stats` feeds them from hooks.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import ConfigError, describe
from .files import atomic_write_with, user_path
from .model import input_device
from .sparsegpt import HessianAccumulator, obs_curvature


LayerStats = dict[str, torch.Tensor]
"""One layer's statistics by terminal name: X [in] and G [out, in], float32 (more where a
registered terminal reads another statistic)."""
COMPUTED = ("X", "G", "H")
"""The statistics ``compute_stats`` measures and the cache holds."""
CLASSIC = ("X", "G")
"""What ``compute_stats`` measures unless told, and what the cache's oldest key stands for."""


class SquaredInputMean:
    """Running mean of x**2 per input column over all tokens seen (summed where the input is,
    accumulated where the statistic is kept)."""

    def __init__(self, in_features: int, device: torch.device | str):
        self.total = torch.zeros(in_features, dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, inp: torch.Tensor) -> None:
        flat = inp.detach().reshape(-1, inp.shape[-1]).to(torch.float64)
        self.total += (flat * flat).sum(dim=0).to(self.total.device)
        self.tokens += flat.shape[0]

    def value(self) -> torch.Tensor:
        return (self.total / max(self.tokens, 1)).to(torch.float32)


class GradientNorm:
    """l2 norm over samples of per-sample gradients: sqrt(sum_s g_s**2), summed in float32."""

    def __init__(self, shape: torch.Size, device: torch.device | str):
        self.sum_sq = torch.zeros(shape, dtype=torch.float32, device=device)

    def add(self, grad: torch.Tensor) -> None:
        g = grad.detach().to(self.sum_sq.device, torch.float32)
        self.sum_sq.addcmul_(g, g)

    def value(self) -> torch.Tensor:
        """The norms, made in place of the sums (no second G-sized tensor): call it once."""
        return self.sum_sq.sqrt_()


STATS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_placement(device: str | None, dtype: str) -> None:
    """--stats-device / --stats-dtype, refused by name before any model loads."""
    if dtype not in STATS_DTYPES:
        raise ConfigError(f"--stats-dtype must be one of {', '.join(STATS_DTYPES)}, got {dtype!r}")
    if device is not None:
        try:
            torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"--stats-device {device!r} is not a device (cpu, cuda, cuda:N): "
                              f"{exc}") from None


def placed(stats: dict[str, LayerStats], device: str | None = None,
           dtype: str = "float32") -> dict[str, LayerStats]:
    """The statistics where they are kept and in what: G in ``dtype`` (X, one value per column,
    stays float32), on ``device`` (None: where they are). Layer by layer, in place of the
    float32 originals, so no second copy of G is ever whole."""
    want = STATS_DTYPES[dtype]
    for layer in stats.values():
        for key, value in layer.items():
            layer[key] = value.to(device or value.device, want if key == "G" else value.dtype)
    return stats


def compute_stats(model: nn.Module, linears: dict[str, nn.Linear], calib: torch.Tensor,
                  progress: bool = True, which: Iterable[str] = CLASSIC,
                  device: str | None = None) -> dict[str, LayerStats]:
    """One pass per calibration window over the dense model, measuring only `which`: a
    backward pass only for G, input hooks only for X (a wanda prune of a 7B model then costs
    forward passes alone, and no gradient memory). Each weight's gradient is added to G as
    soon as backward has made it and then dropped, so the gradients of the whole model are
    never held at once. ``device``: where X and G are accumulated (None: beside each weight;
    "cpu": host memory, the accelerator then holds the model alone)."""
    which = set(which)
    unknown = which - set(COMPUTED)
    if unknown:
        raise ValueError(f"no statistic {', '.join(sorted(unknown))} is computed here "
                         f"(known: {', '.join(COMPUTED)})")
    if not which:
        return {n: {} for n in linears}
    xs = {n: SquaredInputMean(m.in_features, device or m.weight.device)
          for n, m in linears.items()} if "X" in which else {}
    gs = {n: GradientNorm(m.weight.shape, device or m.weight.device)
          for n, m in linears.items()} if "G" in which else {}
    hs = {n: HessianAccumulator(m.in_features, device or m.weight.device)
          for n, m in linears.items()} if "H" in which else {}
    wanted = {id(m.weight) for m in linears.values()} if gs else set()
    saved_flags = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():  # gradients only where a metric reads them
        p.requires_grad_(id(p) in wanted)
    hooks = _hooks(linears, xs, gs, hs)
    dev = input_device(model)
    desc = f"statistics {'/'.join(k for k in COMPUTED if k in which)}"
    try:
        for window in tqdm(calib, desc=desc, unit="sample", disable=not progress):
            ids = window.unsqueeze(0).to(dev)
            if not gs:
                with torch.no_grad():
                    model(input_ids=ids)
                continue
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        for p, flag in saved_flags.items():
            p.requires_grad_(flag)
        release_host_memory()
    out = {n: {**({"X": xs[n].value()} if xs else {}), **({"G": gs[n].value()} if gs else {})}
           for n in linears}
    for n in list(hs):  # one Hessian at a time becomes its curvature and is dropped
        out[n]["H"] = obs_curvature(hs.pop(n).H)
    return out


def _hooks(linears: dict[str, nn.Linear], xs: dict, gs: dict, hs: dict) -> list:
    """The hooks that feed the accumulators: inputs to X and H, each gradient to G."""
    def take_gradient(name: str):
        def hook(weight: torch.Tensor) -> None:
            gs[name].add(weight.grad)
            weight.grad = None
        return hook

    hooks = [m.register_forward_hook(lambda mod, args, out, n=n: xs[n].add(args[0]))
             for n, m in linears.items() if n in xs]
    hooks += [m.register_forward_hook(lambda mod, args, out, n=n: hs[n].add(
        args[0].to(hs[n].H.device))) for n, m in linears.items() if n in hs]
    return hooks + [m.weight.register_post_accumulate_grad_hook(take_gradient(n))
                    for n, m in linears.items() if n in gs]


def release_host_memory() -> None:
    """Hand the host memory the backward passes freed back to the system (glibc keeps freed
    pages for reuse: a 7B model's activations would stay in the process's footprint for the
    rest of a search). Nothing to do, and no error, where the C library is not glibc."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and others: no malloc_trim, nothing kept to trim
        return
    trim(0)


def cache_key(model_id: str, calib: torch.Tensor, extra: dict | None = None) -> str:
    """Hash of what the statistics depend on: the model and the exact calibration tokens
    (which already encode data, split, nsamples, seqlen and seed)."""
    h = hashlib.sha256()
    h.update(json.dumps({"model": model_id, **(extra or {})}, sort_keys=True).encode())
    h.update(calib.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def model_identity(name_or_path: str, revision: str | None = None) -> str:
    """A local model is identified by its weight files' sizes and mtimes (a GGUF file by its
    own), a hub model by its id and revision (the loaders ignore a revision for a local
    directory)."""
    path = user_path(name_or_path)
    if path.is_file():  # a GGUF file: its own size and mtime, as a directory's weight files
        return json.dumps([str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns])
    if not path.is_dir():
        return name_or_path if revision is None else f"{name_or_path}@{revision}"
    files = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".json"})
    return json.dumps([str(path.resolve())] + [[p.name, p.stat().st_size, p.stat().st_mtime_ns]
                                               for p in files])


def save_stats(stats: dict[str, LayerStats], path: Path, meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for name, s in stats.items():
        for key, value in s.items():
            tensors[f"{name}::{key}"] = value.contiguous().cpu()
    # atomic, under a name of its own: a killed run never leaves a half-written cache, and two
    # runs computing the same statistics never write into one file
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def stats_key_of(path: Path) -> str | None:
    """The cache key a statistics file says it was computed for (None: an older or foreign file)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return (fh.metadata() or {}).get("key")


def load_stats(path: Path, linears: dict[str, nn.Linear], which: Iterable[str] = CLASSIC,
               device: str | None = None, dtype: str = "float32") -> dict[str, LayerStats] | None:
    """The cached statistics `which` (on ``device``, None: beside each weight), or None when the
    file does not hold them for these layers. Read one tensor at a time: the file is never
    whole in memory beside the statistics it becomes."""
    from safetensors import safe_open

    out: dict[str, LayerStats] = {}
    with safe_open(str(path), framework="pt") as fh:
        keys = set(fh.keys())
        for name, m in linears.items():
            out[name] = {}
            for key in which:
                k = f"{name}::{key}"
                want = m.weight.shape if key == "G" else (m.in_features,)
                if k not in keys or tuple(fh.get_slice(k).get_shape()) != tuple(want):
                    return None
                t = fh.get_tensor(k)  # G cast on the host: never whole in float32 on the device
                out[name][key] = t.to(STATS_DTYPES[dtype] if key == "G" else t.dtype) \
                    .to(device or m.weight.device)
    return out


def get_stats(model: nn.Module, linears: dict[str, nn.Linear], calib: torch.Tensor,
              model_id: str, cache_dir: Path | None, *, progress: bool = True,
              log=print, revision: str | None = None,
              which: Iterable[str] = CLASSIC, device: str | None = None,
              dtype: str = "float32") -> dict[str, LayerStats]:
    """Statistics `which` from the on-disk cache when present, else computed and cached. A file
    of X and G (the
    cache's oldest key) serves either; any other set is cached under its own key. The cache
    holds float32 (one file serves every ``dtype``); ``device``/``dtype`` say where the returned
    statistics live and what G is stored in (see ``placed``)."""
    which = tuple(k for k in COMPUTED if k in set(which))
    check_placement(device, dtype)
    if cache_dir is None or not which:
        return placed(compute_stats(model, linears, calib, progress, which, device), device, dtype)
    mdtype = str(next(model.parameters()).dtype)
    identity = model_identity(model_id, revision)
    full_key = cache_key(identity, calib, {"dtype": mdtype})  # the key caches have always had
    key = full_key if which == CLASSIC else \
        cache_key(identity, calib, {"dtype": mdtype, "statistics": list(which)})
    for k in dict.fromkeys((full_key, key) if set(which) <= set(CLASSIC) else (key,)):
        cached = _cached(Path(cache_dir) / f"stats-{k}.safetensors", k, linears, which, log,
                         device, dtype)
        if cached is not None:  # placed as it was read (G cast on the host)
            return cached
    path = Path(cache_dir) / f"stats-{key}.safetensors"
    stats = compute_stats(model, linears, calib, progress, which, device)
    try:  # the cache is optional: a full disk never costs the statistics just measured
        save_stats(stats, path, {"key": key, "model": model_id, "nsamples": str(calib.shape[0]),
                                 "seqlen": str(calib.shape[1]), "statistics": ",".join(which)})
    except Exception as exc:  # OSError, or safetensors' own error type on a full disk
        log(f"warning: statistics not cached in {cache_dir} ({describe(exc)}); going on "
            "without the cache")
    else:
        log(f"statistics: cached in {path}")
    return placed(stats, device, dtype)


def _cached(path: Path, key: str, linears: dict[str, nn.Linear], which: tuple[str, ...],
            log, device: str | None = None, dtype: str = "float32") -> dict[str, LayerStats] | None:
    if not path.is_file():
        return None
    try:
        found = stats_key_of(path)
        if found != key:  # a file copied or renamed under this name: never trust it
            log(f"warning: statistics cache {path} was computed for "
                f"{'another calibration' if found else 'an unknown calibration'} "
                f"(key {found}, expected {key}); recomputing")
            return None
        cached = load_stats(path, linears, which, device, dtype)
        if cached is None:
            log(f"warning: statistics cache {path} does not match this model's layers; "
                "recomputing")
            return None
    except Exception as exc:  # a truncated or foreign file: say so, then rebuild it
        log(f"warning: statistics cache {path} is unreadable ({type(exc).__name__}); recomputing")
        return None
    log(f"statistics: loaded from cache {path}")
    return cached
