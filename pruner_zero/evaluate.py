"""Perplexity by the protocol in data.py: exp(mean token NLL over all evaluation windows)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from .model import input_device


@torch.no_grad()
def window_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 8,
               progress: bool = False, desc: str = "perplexity") -> Iterator[tuple[float, int]]:
    """Yield (summed NLL, predicted tokens) per batch, so callers can stop early (racing)."""
    dev = input_device(model)
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, unit="batch",
                      disable=not progress, leave=False):
        ids = windows[start:start + batch_size].to(dev)
        logits = model(input_ids=ids).logits[:, :-1].float()
        target = ids[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                              reduction="sum")
        yield nll.item(), target.numel()


def perplexity(model: nn.Module, windows: torch.Tensor, batch_size: int = 8,
               progress: bool = False, stop: Callable[[float, int], bool] | None = None) -> float:
    """exp of the mean NLL per predicted token. `stop(running_ppl, windows_done)` may end early."""
    total, count, done = 0.0, 0, 0
    for nll, tokens in window_nll(model, windows, batch_size, progress):
        total += nll
        count += tokens
        done = min(done + batch_size, windows.shape[0])
        if stop is not None and stop(_ppl(total, count), done):
            break
    return _ppl(total, count)


def _ppl(total: float, count: int) -> float:
    mean = total / max(count, 1)
    return math.exp(mean) if math.isfinite(mean) and mean < 700 else float("inf")
