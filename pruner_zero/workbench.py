"""One model with its data and statistics, loaded once and shared by prune, eval and search."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import torch

from . import data as data_mod
from .errors import ConfigError
from .model import load_model, max_positions, prunable_linears
from .stats import LayerStats, get_stats

ENV_CACHE = "PRUNER_ZERO_CACHE"


def default_cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE, Path.home() / ".cache" / "pruner_zero"))


@dataclass(frozen=True)
class Protocol:
    """Everything a perplexity number depends on; written into every report."""

    model: str
    data_dir: str | None = None
    calib_split: str = "train"
    eval_split: str = "test"
    nsamples: int = 128
    seqlen: int | None = None  # None: min(2048, what the model allows)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    device_map: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Workbench:
    def __init__(self, protocol: Protocol, cache_dir: Path | None = None,
                 progress: bool = True, log=print):
        if protocol.nsamples < 1:
            raise ConfigError(f"--nsamples must be at least 1, got {protocol.nsamples}")
        if protocol.seqlen is not None and protocol.seqlen < 2:
            raise ConfigError(f"--seqlen must be at least 2, got {protocol.seqlen}")
        if protocol.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {protocol.batch_size}")
        self.data_dir = data_mod.resolve_data_dir(protocol.data_dir)
        if self.data_dir is not None:  # absolute, so a run resumed from elsewhere finds it
            protocol = replace(protocol, data_dir=str(self.data_dir.resolve()))
        if Path(protocol.model).expanduser().exists():
            protocol = replace(protocol, model=str(Path(protocol.model).expanduser().resolve()))
        if cache_dir is not None and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
            raise ConfigError(f"--cache-dir {cache_dir} is a file, not a directory")
        self.cache_dir = cache_dir
        self.progress = progress
        self.log = log
        if not progress:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        self.model, self.tokenizer = load_model(protocol.model, protocol.device, protocol.dtype,
                                                 protocol.device_map)
        limit = max_positions(self.model)
        if protocol.seqlen is None:
            protocol = replace(protocol, seqlen=min(2048, limit or 2048))
        elif limit is not None and protocol.seqlen > limit:
            raise ConfigError(f"--seqlen {protocol.seqlen} is longer than the model allows "
                              f"({limit} positions)")
        self.protocol = protocol
        self.linears = prunable_linears(self.model)

    def _tokens(self, split: str) -> torch.Tensor:
        return data_mod.tokenize(self.tokenizer, data_mod.load_split_text(split, self.data_dir))

    @cached_property
    def calib(self) -> torch.Tensor:
        p = self.protocol
        return data_mod.calibration_windows(self._tokens(p.calib_split), p.nsamples, p.seqlen, p.seed)

    @cached_property
    def eval_ids(self) -> torch.Tensor:
        return self._tokens(self.protocol.eval_split)

    def eval_windows(self, limit: int | None = None, spread: bool = False) -> torch.Tensor:
        return data_mod.eval_windows(self.eval_ids, self.protocol.seqlen, limit, spread)

    @cached_property
    def stats(self) -> dict[str, LayerStats]:
        return get_stats(self.model, self.linears, self.calib, self.protocol.model,
                         self.cache_dir, self.progress, self.log)

    def perplexity(self, windows: torch.Tensor | None = None, stop=None,
                   progress: bool | None = None) -> float:
        from .evaluate import perplexity

        w = self.eval_windows() if windows is None else windows
        show = self.progress if progress is None else progress
        return perplexity(self.model, w, self.protocol.batch_size, show, stop)
