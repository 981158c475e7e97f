"""Token streams for calibration and evaluation: WikiText-2 from local files or the hub, and
documents of a calibration corpus (C4, as Wanda and SparseGPT calibrate).

Protocol (also in the README): a split is read as one text (a local `<split>.txt` verbatim;
hub rows of `wikitext-2-raw-v1` concatenated as they are, or joined by a blank line as Wanda and
SparseGPT do: `text_join="wanda"`), tokenized once. Calibration takes `nsamples` random windows
of `seqlen` tokens (Python `random.Random(seed)`) of the calibration split or, from a corpus of
documents, one window at a random offset of a random document longer than the window;
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
TEXT_JOINS = {"concat": "", "wanda": "\n\n"}
"""How hub rows become one text: as they are (reproduces the file), or Wanda's blank-line join."""
C4 = "c4"
C4_HUB = ("allenai/c4", {"train": "en/c4-train.00000-of-01024.json.gz"})
"""The English C4 shard Wanda and SparseGPT calibrate on."""


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


def check_text_join(text_join: str, data_dir: str | Path | None = None) -> None:
    if text_join not in TEXT_JOINS:
        raise DataError(f"--text-join must be one of {', '.join(TEXT_JOINS)}, got {text_join!r}")
    if text_join != "concat" and data_dir is not None:
        raise DataError(f"--text-join {text_join} joins the rows of hub WikiText-2; a local split "
                        f"file ({data_dir}) is read verbatim: drop --data-dir (and "
                        f"${ENV_DATA}) or --text-join")


def load_split_text(split: str, data_dir: str | Path | None, text_join: str = "concat") -> str:
    """The whole split as one string."""
    check_text_join(text_join, data_dir)
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
            f"cannot load WikiText-2 ({split}) from the hub ({_hub_failure(exc)}); pass "
            f"--data-dir or set {ENV_DATA} "
            "to a directory with train.txt/valid.txt/test.txt") from exc
    return TEXT_JOINS[text_join].join(rows)


def _hub_failure(exc: Exception) -> str:
    """What a hub loader raised, on one line: its type and the first line of its message."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def check_calib_data(source: str) -> None:
    """`c4` or an existing local JSON-lines file, known before any model loads."""
    if not isinstance(source, str) or not source:
        raise DataError(f"--calib-data must be {C4} or a JSON-lines file, got {source!r}")
    if source != C4 and not user_path(source).is_file():
        raise DataError(f"--calib-data {source}: no such file (give {C4} for the hub's C4 shard, "
                        "or a JSON-lines file with a \"text\" field per line, optionally .gz)")


def resolve_calib_data(source: str | None) -> str | None:
    """None (calibrate on a split), `c4`, or the absolute path of an existing local corpus: the
    one form a protocol, a task key and a cache key hold."""
    if source is None:
        return None
    check_calib_data(source)
    return source if source == C4 else str(user_path(source).resolve())


def load_documents(source: str) -> list[str]:
    """The documents of a calibration corpus: `c4` (the hub's English C4 shard, through
    `datasets`) or a local file in the same format: JSON lines with a "text" field, .gz or not."""
    check_calib_data(source)
    if source == C4:
        try:
            from datasets import load_dataset

            return load_dataset(C4_HUB[0], data_files=C4_HUB[1], split="train")["text"]
        except Exception as exc:  # network, cache, and hub errors all mean the same to the user
            raise DataError(
                f"cannot load C4 ({C4_HUB[0]}, {C4_HUB[1]['train']}) from the hub "
                f"({_hub_failure(exc)}); give "
                "--calib-data a local copy of that file (JSON lines, .json.gz)") from exc
    return _read_json_lines(user_path(source))


def _read_json_lines(path: Path) -> list[str]:
    import gzip
    import json

    opener = gzip.open if path.suffix == ".gz" else open
    docs = []
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError):
                    raise DataError(f"--calib-data {path}, line {number}: not a JSON object") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise DataError(f"--calib-data {path}, line {number}: no \"text\" string")
                docs.append(row["text"])
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"cannot read --calib-data {path}: {exc}") from None
    if not docs:
        raise DataError(f"--calib-data {path} holds no documents")
    return docs


def document_windows(tokenizer, docs: list[str], nsamples: int, seqlen: int,
                     seed: int) -> torch.Tensor:
    """[nsamples, seqlen] calibration windows drawn as Wanda and SparseGPT draw them from C4
    (same random stream for the same seed): a random document, redrawn until it is longer than
    the window, then a random window inside it."""
    rng = random.Random(seed)
    short: set[int] = set()  # documents known too short: redrawn without tokenizing again
    windows = []
    while len(windows) < nsamples:
        i = rng.randint(0, len(docs) - 1)
        if i in short:
            continue
        ids = tokenize(tokenizer, docs[i])
        if ids.numel() <= seqlen:
            short.add(i)
            if len(short) == len(docs):
                raise DataError(f"no calibration document is longer than --seqlen {seqlen} "
                                "tokens; use a shorter --seqlen or longer documents")
            continue
        start = rng.randint(0, ids.numel() - seqlen - 1)
        windows.append(ids[start:start + seqlen])
    return torch.stack(windows)


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


def spread_indices(n: int, total: int) -> torch.Tensor:
    """Window floor(i * total / n), i = 0..n-1: n of ``total`` windows spread evenly."""
    return torch.arange(n) * total // n


def eval_windows(ids: torch.Tensor, seqlen: int, limit: int | None = None,
                 spread: bool = False, exclude: list[int] | None = None,
                 skip_spread: int | None = None) -> torch.Tensor:
    """[n, seqlen] non-overlapping windows from the start. `limit` keeps the first ones or, with
    `spread`, windows evenly spaced over the whole split (window i * n // limit): a subset that
    samples every part of the split, where the first windows are a few articles only.
    `exclude`: offsets of calibration windows (same split, same length); every window that
    shares a token with one of them is dropped first, so selection never sees calibration text.
    `skip_spread`: then also drop the windows a spread subset of that size takes (a search's
    fitness windows), so a confirmation reads text the fitness never read; when that subset
    is the whole split, nothing is dropped (there is no other text)."""
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
    if skip_spread is not None and skip_spread < n:
        keep = torch.ones(n, dtype=torch.bool)
        keep[spread_indices(skip_spread, n)] = False
        windows = windows[keep]
        n = windows.shape[0]
    if limit is None or limit >= n:
        return windows
    if spread:
        return windows[spread_indices(limit, n)]
    return windows[:limit]

