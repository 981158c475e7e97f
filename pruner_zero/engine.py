"""The "evaluate this metric" machine: model, dense weights and statistics held once;
any number of metrics scored, masked, applied, measured and undone in place."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
from torch import nn

from .masks import Structure, make_mask
from .stats import LayerStats


@dataclass
class SparsityReport:
    per_layer: dict[str, float]
    overall: float
    zeros: int
    total: int

    def as_dict(self) -> dict:
        return {"overall": self.overall, "zeros": self.zeros, "total": self.total,
                "per_layer": self.per_layer}


def measure_sparsity(linears: dict[str, nn.Linear]) -> SparsityReport:
    """Fraction of exact zeros, measured on the weights themselves (not on the masks)."""
    per, zeros, total = {}, 0, 0
    for name, lin in linears.items():
        z = int((lin.weight == 0).sum())
        per[name] = z / lin.weight.numel()
        zeros += z
        total += lin.weight.numel()
    return SparsityReport(per_layer=per, overall=zeros / max(total, 1), zeros=zeros, total=total)


def metric_scores(tree, weight: torch.Tensor, stats: LayerStats) -> torch.Tensor:
    """The metric on one layer: W enters as |W| in float32 (as in the original code), the
    statistics by their terminal names."""
    from .metric.tree import score_metric

    return score_metric(tree, {"W": weight.detach().abs().float(),
                               **{k: v.float() for k, v in stats.items()}})


CALIBRATIONS = ("dense", "sequential")


def check_calibration(mode: str) -> str:
    from .errors import ConfigError

    if mode not in CALIBRATIONS:
        raise ConfigError(f"--calibration must be dense or sequential, got {mode!r}")
    return mode


@dataclass
class Engine:
    """``calibration="dense"``: X is the dense model's (one forward pass per candidate);
    ``"sequential"``: X of each block is measured on the outputs of the blocks already pruned
    with the same metric (the Wanda / Pruner-Zero protocol; needs ``calib``). G is always the
    dense model's, as the published code precomputes it."""

    model: nn.Module
    linears: dict[str, nn.Linear]
    stats: dict[str, LayerStats]
    structure: Structure
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    calibration: str = "dense"
    calib: torch.Tensor | None = None
    progress: bool = False

    def __post_init__(self):
        check_calibration(self.calibration)
        if self.calibration == "sequential" and self.calib is None:
            raise ValueError("sequential calibration needs the calibration windows")
        if not self.dense:  # one copy of the dense weights, made once
            self.dense = {n: m.weight.detach().clone() for n, m in self.linears.items()}

    def masks(self, tree, formula: str = "metric") -> dict[str, torch.Tensor]:
        """Score every layer and turn scores into masks; a NaN/inf/constant metric is a MetricError.
        The model's weights are as before the call (dense)."""
        if self.calibration == "sequential":
            return self._sequential_masks(tree, formula)
        return {name: self._mask(name, tree, formula, self.stats[name]) for name in self.linears}

    def _mask(self, name: str, tree, formula: str, stats: LayerStats) -> torch.Tensor:
        from .metric.tree import check_scores

        scores = metric_scores(tree, self.dense[name], stats)
        check_scores(scores, formula)
        return make_mask(scores, self.structure)

    @torch.no_grad()
    def _sequential_masks(self, tree, formula: str) -> dict[str, torch.Tensor]:
        from .layerwise import accumulate_inputs, block_linears, walk
        from .model import layers_prefix
        from .stats import SquaredInputMean

        prefix = layers_prefix(self.model)
        out: dict[str, torch.Tensor] = {}

        def visit(i: int, block: nn.Module, run) -> None:
            linears = {f"{prefix}.{i}.{n}": m for n, m in block_linears(block).items()}
            xs = accumulate_inputs(linears, lambda m: SquaredInputMean(m.in_features, m.weight.device),
                                   run)
            for name, lin in linears.items():
                stats = {**self.stats[name], "X": xs[name].value()}
                out[name] = self._mask(name, tree, formula, stats)
                lin.weight.masked_fill_(out[name], 0)

        self.restore()
        try:
            walk(self.model, self.calib, visit, self.progress, desc="sequential calibration")
        finally:
            self.restore()
        return out

    @torch.no_grad()
    def apply(self, masks: dict[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            self.linears[name].weight.masked_fill_(mask, 0)

    @torch.no_grad()
    def restore(self) -> None:
        for name, lin in self.linears.items():
            lin.weight.copy_(self.dense[name])

    def sparsity(self) -> SparsityReport:
        return measure_sparsity(self.linears)


def mask_fingerprint(masks: dict[str, torch.Tensor]) -> str:
    """Hash over all layers' masks: equal fingerprints mean the same pruned model.
    Bits are packed on the masks' device first, so a GPU sends 1/8 of the bytes to the host."""
    h = hashlib.sha256()
    for name in sorted(masks):
        h.update(name.encode())
        h.update(_packbits(masks[name]).cpu().numpy().tobytes())
    return h.hexdigest()


def _packbits(mask: torch.Tensor) -> torch.Tensor:
    flat = mask.flatten().to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(8, device=flat.device, dtype=torch.uint8)
    return (flat.view(-1, 8) << shifts).sum(dim=1, dtype=torch.uint8)
