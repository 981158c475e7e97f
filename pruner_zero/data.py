"""Token streams for calibration and evaluation: WikiText-2 from local files or the hub.

Protocol (also in the README): a split is read as one text (a local `<split>.txt` verbatim;
hub rows of `wikitext-2-raw-v1` concatenated as they are, which reproduces the file), tokenized
once. Calibration takes `nsamples` random windows of `seqlen` tokens (Python `random.Random(seed)`);
evaluation cuts the split into non-overlapping `seqlen` windows and drops the tail.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from .errors import DataError
from .files import user_path

ENV_DATA = "PRUNER_ZERO_DATA"
HUB_DATASET = ("wikitext", "wikitext-2-raw-v1")
HUB_SPLITS = {"train": "train", "valid": "validation", "validation": "validation", "test": "test"}


def resolve_data_dir(data_dir: str | None) -> Path | None:
    """--data-dir wins, then $PRUNER_ZERO_DATA; None means the hub."""
    chosen = data_dir or os.environ.get(ENV_DATA)
    if not chosen:
        return None
    path = user_path(chosen)
    if not path.is_dir():
        source = "--data-dir" if data_dir else f"${ENV_DATA}"
        raise DataError(f"data directory not found: {path} (from {source})")
    return path


def load_split_text(split: str, data_dir: str | Path | None) -> str:
    """The whole split as one string."""
    if data_dir is not None:
        name = "valid" if split == "validation" else split
        path = Path(data_dir) / f"{name}.txt"
        if not path.is_file():
            raise DataError(f"split {split!r} not found: looked for {path}")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"the split file {path} is not UTF-8 text: byte {exc.start} "
                            f"({exc.object[exc.start:exc.start + 1]!r}) cannot be decoded; "
                            "convert it, e.g. iconv -t utf-8") from None
        except OSError as exc:
            raise DataError(f"cannot read the split file {path}: {exc.strerror or exc}") from None
    if split not in HUB_SPLITS:
        raise DataError(f"unknown split {split!r}: expected one of train, valid, test")
    try:
        from datasets import load_dataset

        rows = load_dataset(*HUB_DATASET, split=HUB_SPLITS[split])["text"]
    except Exception as exc:  # network, cache, and hub errors all mean the same to the user
        raise DataError(
            f"cannot load WikiText-2 ({split}) from the hub ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); pass --data-dir or set {ENV_DATA} "
            "to a directory with train.txt/valid.txt/test.txt") from exc
    return "".join(rows)


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """1-D LongTensor of the whole text's token ids."""
    return tokenizer(text, return_tensors="pt").input_ids[0]


def calibration_starts(n_tokens: int, nsamples: int, seqlen: int, seed: int) -> list[int]:
    """Token offsets of the calibration windows; the same seed always gives the same offsets."""
    if n_tokens <= seqlen:
        raise DataError(f"calibration split has {n_tokens} tokens, fewer than --seqlen {seqlen}")
    distinct = n_tokens - seqlen
    if nsamples > distinct:
        raise DataError(f"--nsamples {nsamples} is more than the {distinct} distinct windows of "
                        f"{seqlen} tokens in the calibration split ({n_tokens} tokens); the limit "
                        f"for this split is {distinct}")
    rng = random.Random(seed)
    return [rng.randint(0, n_tokens - seqlen - 1) for _ in range(nsamples)]


def eval_windows(ids: torch.Tensor, seqlen: int, limit: int | None = None,
                 spread: bool = False, exclude: list[int] | None = None) -> torch.Tensor:
    """[n, seqlen] non-overlapping windows from the start. `limit` keeps the first ones or, with
    `spread`, windows evenly spaced over the whole split (window i * n // limit): a subset that
    samples every part of the split, where the first windows are a few articles only.
    `exclude`: offsets of calibration windows (same split, same length); every window that
    shares a token with one of them is dropped first, so selection never sees calibration text."""
    n = ids.numel() // seqlen
    if n == 0:
        raise DataError(f"evaluation split has {ids.numel()} tokens, fewer than --seqlen {seqlen}")
    windows = ids[: n * seqlen].view(n, seqlen)
    if exclude:
        keep = torch.ones(n, dtype=torch.bool)
        for s in exclude:  # [s, s + seqlen) touches windows s // seqlen .. (s + seqlen - 1) // seqlen
            keep[s // seqlen: min(n, (s + seqlen - 1) // seqlen + 1)] = False
        windows = windows[keep]
        n = windows.shape[0]
        if n == 0:
            raise DataError("no evaluation window is left once the calibration windows are "
                            "excluded; use fewer --nsamples or another split")
    if limit is None or limit >= n:
        return windows
    if spread:
        return windows[torch.arange(limit) * n // limit]
    return windows[:limit]
