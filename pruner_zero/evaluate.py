"""Perplexity by the protocol in data.py: exp(mean token NLL over all evaluation windows)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from .model import input_device


# Architectures whose causal-LM forward is `lm_head(base_model(ids)[0])`, nothing after the head
# (no soft-capping, no logit scale): their NLL is taken from the hidden states, a slice of tokens
# at a time, without the (tokens x vocabulary) logits tensor the whole forward builds. On
# SmolLM2 (vocabulary 49152) that tensor and the cross entropy over it cost more than the decoder.
PLAIN_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "opt"})
HEAD_CHUNK_ELEMENTS = 1 << 24  # logits computed at once: 64 MB in float32


def plain_head(model: nn.Module) -> nn.Linear | None:
    """The output head when the model's logits are that head over its base model's last hidden
    states and nothing else, else None (the whole forward is used)."""
    config = getattr(model, "config", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if getattr(config, "model_type", None) not in PLAIN_HEAD_TYPES or not isinstance(head, nn.Linear):
        return None
    if any(getattr(config, k, None) not in (None, 1, 1.0) for k in
           ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    if not type(model).__module__.startswith("transformers.models."):
        return None  # remote code may name a known type and bring its own head
    return head if getattr(model, "base_model", model) is not model else None


def _head_nll(head: nn.Linear, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Summed NLL of ``target`` (tokens) under ``head`` over ``hidden`` (tokens x dim), a slice
    of tokens at a time; logits in float32 as the whole forward's, the sum in float64."""
    chunk = max(1, HEAD_CHUNK_ELEMENTS // head.out_features)
    total = torch.zeros((), dtype=torch.float64)
    for s in range(0, hidden.shape[0], chunk):
        # the module, not its weight: a model spread over devices (or offloaded) moves its
        # inputs and loads its weight in the head's hooks
        logits = head(hidden[s:s + chunk]).float()
        picked = logits.gather(1, target[s:s + chunk, None].to(logits.device))[:, 0]
        total += (torch.logsumexp(logits, -1) - picked).sum(dtype=torch.float64).cpu()
    return total


@torch.no_grad()
def window_nll(model: nn.Module, windows: torch.Tensor, batch_size: int = 8,
               progress: bool = False, desc: str = "perplexity") -> Iterator[tuple[float, int]]:
    """Yield (summed NLL, predicted tokens) per batch, so callers can stop early (racing)."""
    dev = input_device(model)
    head = plain_head(model)
    for start in tqdm(range(0, windows.shape[0], batch_size), desc=desc, unit="batch",
                      disable=not progress, leave=False):
        ids = windows[start:start + batch_size].to(dev)
        target = ids[:, 1:]
        if head is not None:
            hidden = model.base_model(input_ids=ids)[0][:, :-1]
            nll = _head_nll(head, hidden.reshape(-1, hidden.shape[-1]), target.reshape(-1))
        else:
            logits = model(input_ids=ids).logits[:, :-1].float()
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
