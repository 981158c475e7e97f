"""The layer walk of Wanda, SparseGPT and Pruner-Zero: the calibration windows go through the
decoder one block at a time; each block is measured on the outputs of the blocks before it
(already pruned), changed, then run again to give the next block its inputs. Peak memory is one
block's activations for the calibration windows, not the whole model's.

`walk` knows nothing of metrics or Hessians: a `visit(index, block, run)` callback registers its
hooks, calls `run()` to feed the block every current input, and changes the block's weights.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from .model import decoder_layers, input_device

Visit = Callable[[int, nn.Module, Callable[[], None]], None]


class _Captured(Exception):
    """Raised by the first block's stand-in once it has seen its input: nothing else runs."""


@torch.no_grad()
def block_inputs(model: nn.Module, calib: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
    """The first block's inputs for every calibration window, and the keyword arguments the
    model passes its blocks (attention mask, rotary position embeddings, ...)."""
    layers = decoder_layers(model)
    inputs: list[torch.Tensor] = []
    seen: dict = {}

    class Catcher(nn.Module):
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, hidden_states, *args, **kwargs):
            inputs.append(hidden_states)
            seen.update(kwargs)
            raise _Captured

    first = layers[0]
    layers[0] = Catcher(first)
    dev = input_device(model)
    try:
        for window in calib:
            try:
                model(input_ids=window.unsqueeze(0).to(dev), use_cache=False)
            except _Captured:
                pass
    finally:
        layers[0] = first
    # no key/value cache: with one, every window would attend to the windows run before it
    for key in ("past_key_values", "past_key_value", "cache", "layer_past"):
        seen.pop(key, None)
    seen["use_cache"] = False
    return inputs, seen


@torch.no_grad()
def walk(model: nn.Module, calib: torch.Tensor, visit: Visit, progress: bool = True,
         desc: str = "layer by layer") -> None:
    """Visit every decoder block in order, on inputs produced by the blocks already visited."""
    inputs, kwargs = block_inputs(model, calib)
    for i, block in enumerate(tqdm(decoder_layers(model), desc=desc, unit="block",
                                   disable=not progress)):
        def run(block: nn.Module = block) -> None:
            for x in inputs:
                block(x, **kwargs)

        visit(i, block, run)
        outputs = []
        for x in inputs:  # the block as the visit left it (pruned) makes the next one's inputs
            out = block(x, **kwargs)
            outputs.append(out[0] if isinstance(out, tuple) else out)
        inputs = outputs


def block_linears(block: nn.Module) -> dict[str, nn.Linear]:
    """The block's linears by their name inside the block."""
    return {n: m for n, m in block.named_modules() if isinstance(m, nn.Linear)}


def accumulate_inputs(linears: dict[str, nn.Linear], make: Callable[[nn.Linear], Any],
                      run: Callable[[], None]) -> dict[str, Any]:
    """Run the block once with an accumulator (`make(linear)`, with an `add(input)` method) on
    the input of each of its linears; the hooks are gone afterwards, whatever happens."""
    acc = {n: make(m) for n, m in linears.items()}
    hooks = [m.register_forward_hook(lambda mod, a, o, n=n: acc[n].add(a[0]))
             for n, m in linears.items()]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return acc
