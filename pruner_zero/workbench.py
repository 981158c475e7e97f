"""One model with its data and statistics, loaded once and shared by prune, eval and search."""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Iterable

import torch
from transformers.utils import logging as hf_logging

from . import data as data_mod
from .engine import check_calibration
from .errors import ConfigError
from .evaluate import perplexity
from .files import atomic_write_json, check_writable_dir, read_json, user_path
from .gguf import checkpoint_for, find_gguf
from .model import input_device, load_model, max_positions, prunable_linears
from .ppl_cache import FORMAT, ppl_path, read_ppl, write_ppl
from .runtime import Runtime
from .sampling import Sampling
from .stats import CLASSIC, LayerStats, cache_key, check_placement, get_stats, model_identity
from .windows import window_budget, windows_note

ENV_CACHE = "PRUNER_ZERO_CACHE"


def default_cache_dir() -> Path:
    """$PRUNER_ZERO_CACHE (an empty value counts as unset, as for $PRUNER_ZERO_DATA), else
    ~/.cache/pruner_zero."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "pruner_zero")


@dataclass(frozen=True)
class Protocol(Runtime, Sampling):
    """Everything a perplexity number depends on; written into every report: the model and its
    calibration (``Sampling``), where and how the model runs (``Runtime``) and the split
    measured."""

    eval_split: str = "test"
    eval_windows: int | None = None  # None: every window of eval_split; N: N spread evenly over it

    def as_dict(self) -> dict:
        return asdict(self)

    def runtime(self) -> Runtime:
        return Runtime(**{f.name: getattr(self, f.name) for f in fields(Runtime)})

    def check_types(self) -> None:
        """The Python API's arguments, as strictly as the CLI's."""
        self.check_sampling()
        Runtime.check_types(self)
        if not isinstance(self.eval_split, str):
            raise ConfigError(f"eval_split must be a string, got {self.eval_split!r}")


class Workbench:
    def __init__(self, protocol: Protocol, cache_dir: Path | None = None,
                 progress: bool = True, log=print):
        protocol = self._checked(protocol)
        self.data_dir = data_mod.resolve_data_dir(protocol.data_dir)
        data_mod.check_text_join(protocol.text_join, self.data_dir)
        protocol = replace(protocol, calib_data=data_mod.resolve_calib_data(protocol.calib_data))
        if self.data_dir is not None:  # absolute, so a run resumed from elsewhere finds it
            protocol = replace(protocol, data_dir=str(self.data_dir.resolve()))
        if user_path(protocol.model).exists():
            protocol = replace(protocol, model=str(user_path(protocol.model).resolve()))
        if cache_dir is not None:  # the cache is written after the statistics: check it first
            check_writable_dir(cache_dir, "--cache-dir")
        self.cache_dir = cache_dir
        self.progress = progress
        self.log = log
        if not progress:
            hf_logging.disable_progress_bar()
        protocol = self._load(protocol, cache_dir)
        limit = max_positions(self.model)
        if protocol.seqlen is None:
            protocol = replace(protocol, seqlen=min(2048, limit or 2048))
        elif limit is not None and protocol.seqlen > limit:
            raise ConfigError(f"--seqlen {protocol.seqlen} is longer than the model allows "
                              f"({limit} positions)")
        self.protocol = protocol
        self.linears = prunable_linears(self.model)
        self._token_cache: dict[tuple[str, str], torch.Tensor] = {}
        self._documents: dict[str, list[str]] = {}
        self._statistics: dict[frozenset, dict[str, LayerStats]] = {}

    @staticmethod
    def _checked(protocol: Protocol) -> Protocol:
        """Every option of the protocol checked before anything loads."""
        protocol.check_types()
        protocol = replace(protocol, eval_windows=window_budget(protocol.eval_windows,
                                                                "eval_windows"))
        if protocol.nsamples < 1:
            raise ConfigError(f"--nsamples must be at least 1, got {protocol.nsamples}")
        if protocol.seqlen is not None and protocol.seqlen < 2:
            raise ConfigError(f"--seqlen must be at least 2, got {protocol.seqlen}")
        check_calibration(protocol.calibration)
        check_placement(protocol.stats_device, protocol.stats_dtype)
        return protocol

    def _load(self, protocol: Protocol, cache_dir: Path | None) -> Protocol:
        """The model and tokenizer; a GGUF file is converted first (into the cache, or into a
        scratch directory gone after the load). Returns the protocol naming the source."""
        gguf_file, scratch = find_gguf(protocol.model), None
        self.source = None  # a GGUF model's source record (gguf.GgufSource)
        try:
            if gguf_file is not None:
                if cache_dir is None:  # no cache: the conversion serves this load only
                    scratch = Path(tempfile.mkdtemp(prefix="pruner-zero-gguf-"))
                self.source = self._gguf_source(gguf_file, cache_dir or scratch)
                protocol = replace(protocol, model=self.source.file)
            self.model, self.tokenizer = load_model(
                protocol.model if self.source is None else self.source.checkpoint,
                protocol.device, protocol.dtype, protocol.device_map, protocol.revision,
                protocol.trust_remote_code)
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
                if self.source is not None:
                    self.source = replace(self.source, checkpoint=None)  # gone: nothing to name
        return protocol

    def _gguf_source(self, gguf_file: Path, where: Path):
        """The checkpoint of a GGUF model in ``where`` (converted on first use), logged."""
        source = checkpoint_for(gguf_file, where, self.log)
        self.log(f"model: {source.describe()}")
        return source

    def source_record(self) -> dict:
        """What a report says about where the weights came from beyond ``protocol.model``."""
        return {} if self.source is None else {"model_source": self.source.as_dict()}

    def _tokens(self, split: str) -> torch.Tensor:
        key = (split, self.protocol.text_join)
        if key not in self._token_cache:  # shared by every variant of this bench
            self._token_cache[key] = data_mod.tokenize(
                self.tokenizer, data_mod.load_split_text(split, self.data_dir,
                                                         self.protocol.text_join))
        return self._token_cache[key]

    def variant(self, **changes) -> "Workbench":
        """The same loaded model under another protocol (e.g. another calibration seed or
        split): statistics and windows are its own, the model and token streams are shared.
        Only protocol fields that need no reload may change."""
        fixed = ("model", "device", "dtype", "device_map", "revision", "trust_remote_code")
        bad = [k for k in changes if k in fixed]
        if bad:
            raise ConfigError(f"a variant cannot change {', '.join(bad)}; load another Workbench")
        clone = object.__new__(Workbench)
        clone.__dict__.update({k: v for k, v in self.__dict__.items()
                               if k not in ("calib", "stats", "calib_starts", "_statistics")})
        clone._statistics = {}  # its own calibration: its own statistics
        if "data_dir" in changes and changes["data_dir"] != self.protocol.data_dir:
            clone.data_dir = data_mod.resolve_data_dir(changes["data_dir"])
            changes["data_dir"] = None if clone.data_dir is None else str(clone.data_dir.resolve())
            clone._token_cache = {}  # other text: its own token streams
        if "text_join" in changes:
            data_mod.check_text_join(changes["text_join"], clone.data_dir)
        if "calib_data" in changes:
            changes["calib_data"] = data_mod.resolve_calib_data(changes["calib_data"])
        if changes.get("seqlen") is not None:
            limit = max_positions(self.model)
            if limit is not None and changes["seqlen"] > limit:
                raise ConfigError(f"--seqlen {changes['seqlen']} is longer than the model allows "
                                  f"({limit} positions)")
        elif "seqlen" in changes:  # None: the model's default, as for a fresh Workbench
            changes["seqlen"] = min(2048, max_positions(self.model) or 2048)
        clone.protocol = replace(self.protocol, **changes)
        return clone

    @cached_property
    def calib_starts(self) -> list[int]:
        """Offsets of the calibration windows in the calibration split (none from a corpus)."""
        p = self.protocol
        if p.calib_data is not None:
            return []
        return data_mod.calibration_starts(self._tokens(p.calib_split).numel(), p.nsamples,
                                           p.seqlen, p.seed)

    @cached_property
    def calib(self) -> torch.Tensor:
        p = self.protocol
        if p.calib_data is not None:
            if p.calib_data not in self._documents:  # shared by every variant of this bench
                self._documents[p.calib_data] = data_mod.load_documents(p.calib_data)
            return data_mod.document_windows(self.tokenizer, self._documents[p.calib_data],
                                             p.nsamples, p.seqlen, p.seed)
        ids = self._tokens(p.calib_split)
        return torch.stack([ids[s:s + p.seqlen] for s in self.calib_starts])

    def eval_windows(self, limit: int | None = None, spread: bool = False) -> torch.Tensor:
        """Windows of the evaluation split: all, or ``limit`` of them (the first, or spread)."""
        return data_mod.eval_windows(self._tokens(self.protocol.eval_split), self.protocol.seqlen,
                                     limit, spread)

    def report_windows(self) -> torch.Tensor:
        """The windows ``prune`` and ``eval`` report on: every window of the evaluation split, or
        the protocol's ``eval_windows`` spread evenly (window floor(i * W / N) of its W)."""
        return self.eval_windows(self.protocol.eval_windows, spread=True)

    def windows_note(self, measured: int) -> str:
        return windows_note(self.protocol.eval_split, self.protocol.eval_windows, measured)

    def split_windows(self, split: str, limit: int | None = None, spread: bool = False,
                      skip_spread: int | None = None) -> torch.Tensor:
        """Windows of ``split`` for a search; on the calibration split, without any window that
        shares a token with a calibration window (selection never measures calibration text);
        ``skip_spread``: without the fitness windows too (``data.eval_windows``)."""
        p = self.protocol
        exclude = self.calib_starts if split == p.calib_split and p.calib_data is None else None
        return data_mod.eval_windows(self._tokens(split), self.protocol.seqlen, limit, spread,
                                     exclude, skip_spread)

    @cached_property
    def stats(self) -> dict[str, LayerStats]:
        """The classic statistics (X and G) of every layer."""
        return self.statistics(CLASSIC)

    def statistics(self, names: Iterable[str]) -> dict[str, LayerStats]:
        """The statistics `names` (e.g. {"X"} for wanda: no backward pass), from what this bench
        already holds when it can, else measured (or read from the cache) once."""
        want = frozenset(names)
        held = [s for k, s in self._statistics.items() if want <= k]
        classic = self.__dict__.get("stats")  # X and G, and what a caller added to them
        if classic is not None and all(want <= set(s) for s in classic.values()):
            held.insert(0, classic)
        if held:
            return {n: {k: v for k, v in s.items() if k in want} for n, s in held[0].items()}
        self._statistics[want] = get_stats(
            self.model, self.linears, self.calib, self.protocol.model, self.cache_dir,
            progress=self.progress, log=self.log, revision=self.protocol.revision, which=want,
            device=self.protocol.stats_device, dtype=self.protocol.stats_dtype)
        return self._statistics[want]

    def dense_perplexity(self) -> float:
        """The unpruned model's perplexity on the evaluation split, from the cache directory when
        this model, dtype, device, batch size and exact evaluation tokens were measured before
        (a prune of a 7B model saves one whole evaluation)."""
        windows = self.report_windows()
        if self.cache_dir is None:
            return self.perplexity(windows)
        p = self.protocol
        key = cache_key(model_identity(p.model, p.revision), windows,
                        {"measure": "dense perplexity", "format": FORMAT,
                         "windows": list(windows.shape),
                         "dtype": str(next(self.model.parameters()).dtype),
                         "device": input_device(self.model).type, "batch_size": p.batch_size})
        cached = read_ppl(self.cache_dir, key, "dense perplexity", self.log)
        if cached is not None:
            self.log(f"dense perplexity: from cache {ppl_path(self.cache_dir, key)}")
            return cached
        ppl = self.perplexity(windows)
        write_ppl(self.cache_dir, key, {"model": p.model, "split": p.eval_split, "ppl": ppl},
                  "dense perplexity", self.log)
        return ppl

    def perplexity(self, windows: torch.Tensor | None = None, stop=None,
                   progress: bool | None = None) -> float:
        w = self.report_windows() if windows is None else windows
        show = self.progress if progress is None else progress
        return perplexity(self.model, w, self.protocol.batch_size, show, stop)
