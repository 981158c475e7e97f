"""The "evaluate this metric" machine: model and statistics held once; any number of metrics
scored, masked, applied, measured and undone in place, one layer at a time.

Memory is bounded by one layer beyond what is held anyway: a layer is scored, masked and pruned
before the next is touched (no mask dict for the model), the fingerprint of the masks is hashed as
they are made, statistics kept on the host are moved to the accelerator one layer at a time, and
what a prune zeroes is kept (on the host, beside a 1-bit mask) so that ``restore`` can put it back
instead of a dense copy of the model. A model on the CPU, where the restore's scatter costs as
much as the candidate's own scoring, is restored from one dense copy instead (``keep="copy"``: the
same memory pool the model already uses, at most twice its linear weights; shared by the engines
of one model).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

import torch
from torch import nn

from .errors import ConfigError
from .layerwise import accumulate_inputs, block_linears, walk
from .masks import (Fingerprint, PackedMasks, Structure, block_mask, make_mask,
                    packbits, unpackbits)
from .metric.tree import check_scores, score_metric
from .model import layers_prefix
from .recipe import LSQS, SWEEPS, UPDATES
from .sparsegpt import (HessianAccumulator, inverse_hessian_factor, lsq_weight, obs_curvature,
                        obs_sweep, sparsegpt_weight)
from .stats import LayerStats, SquaredInputMean


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
    statistics by their terminal names, moved to the weight's device for this layer only (so
    statistics may live on the host) and computed in float32 whatever they are stored in."""
    return score_metric(tree, {"W": weight.detach().abs().float(),
                               **{k: v.to(weight.device, torch.float32) for k, v in stats.items()}})


CALIBRATIONS = ("dense", "sequential")


def check_calibration(mode: str) -> str:
    if mode not in CALIBRATIONS:
        raise ConfigError(f"--calibration must be dense or sequential, got {mode!r}")
    return mode


@dataclass
class _Undo:
    """What one layer's prune changed: the 1-bit mask and the values it zeroed, on the host."""
    packed: torch.Tensor
    values: torch.Tensor
    shape: torch.Size


@dataclass
class Engine:
    """``calibration="dense"``: X is the dense model's (one forward pass per candidate);
    ``"sequential"``: X of each block is measured on the outputs of the blocks already pruned
    with the same metric (the Wanda / Pruner-Zero protocol; needs ``calib``). G is always the
    dense model's, as the published code precomputes it.

    ``keep="host"`` keeps what each prune zeroes in host memory (a search: ``restore`` brings the
    dense model back); ``keep="copy"`` restores from a dense copy of the linear weights (``dense``,
    made at the first prune unless given: engines of one model share it); ``keep=None`` keeps
    nothing (a prune that stays: no copy at all). ``undo_kind`` chooses between the first two.

    ``update="obs"``: each layer is pruned with the metric's mask and its kept weights are
    reconstructed by SparseGPT's solver under that mask, block after block on the calibration
    windows (each layer sees the pruned and updated blocks before it); X comes from that walk
    with ``"sequential"``, from the dense model with ``"dense"``. ``update="sweep"``: the same
    walk and solver, but the metric chooses each block's mask inside the solver, scored on the
    block's columns as updated so far (``masks.block_mask``), H from the walk's own Hessian.
    ``"lsq"``, ``"sweep-lsq"``: the masks of "obs", "sweep", the kept weights then solved
    exactly (``sparsegpt.lsq_weight``) under the same H."""

    model: nn.Module
    linears: dict[str, nn.Linear]
    stats: dict[str, LayerStats]
    structure: Structure
    calibration: str = "dense"
    calib: torch.Tensor | None = None
    progress: bool = False
    keep: str | None = "host"
    dense: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # may start empty
    sparsities: dict[str, float] | None = None  # per linear (an allocation); None: structure's
    update: str | None = None  # one of recipe.UPDATES (None: the kept weights stay)
    _undo: dict[str, _Undo] = field(default_factory=dict, init=False, repr=False)
    _pruned: list[str] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        check_calibration(self.calibration)
        if self.calibration == "sequential" and self.calib is None:
            raise ValueError("sequential calibration needs the calibration windows")
        if self.keep not in KEEPS:
            raise ValueError(f"keep must be one of {KEEPS}, got {self.keep!r}")
        if self.keep == "copy" and self.dense is None:
            self.dense = {}  # filled at the first prune
        if self.update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {self.update!r}")
        if self.update is not None and self.calib is None:
            raise ValueError("an update walks the blocks: it needs the calibration windows")
        if self.update is not None and self.keep == "host":
            raise ValueError("an update changes the kept weights: undo it from a copy "
                             "(keep='copy'), not from the zeroed values")

    # -- public --------------------------------------------------------------------------
    def check(self, tree, formula: str = "metric") -> None:
        """Score every layer on the dense statistics, apply nothing: a NaN/inf/constant metric
        is a MetricError before any long work (a prune checks before its dense evaluation)."""
        for name in self.linears:
            self._layer_mask(name, tree, formula, self.stats[name])

    @torch.no_grad()
    def fingerprint(self, tree, formula: str = "metric") -> str:
        """The fingerprint of the masks ``prune`` would apply; the model is left as it was."""
        fp = Fingerprint()
        self._masks_into(tree, formula, fp)
        return fp.hexdigest()

    @torch.no_grad()
    def packed_masks(self, tree, formula: str = "metric", walked: bool = True) -> PackedMasks:
        """The masks ``prune`` would apply, packed (1 bit per weight), and their fingerprint; the
        model is left as it was. ``prune_with`` applies them without scoring again. When an
        update's walk made them, and ``walked``, the weights it left outside the masks come too
        (on the host): ``prune_with`` puts them back instead of walking again."""
        fp = Fingerprint(keep_packed=True)
        weights: dict[str, torch.Tensor] | None = {} if walked else None
        self._masks_into(tree, formula, fp, weights)
        return PackedMasks(fp.hexdigest(), fp.packed, weights or None)

    @torch.no_grad()
    def prune(self, tree, formula: str = "metric") -> str:
        """Prune the model in place with the metric, layer by layer; returns the masks'
        fingerprint. A metric that fails on some layer leaves the model as it was (restored),
        unless ``keep=None``: then the layers pruned before the failure stay pruned (a prune
        checks the metric on every layer first, ``check``)."""
        fp = Fingerprint()
        self._prune_into(tree, formula, fp)
        return fp.hexdigest()

    @torch.no_grad()
    def prune_with(self, masks: PackedMasks) -> str:
        """Prune with masks ``packed_masks`` made: the model ``prune`` of that metric gives (with
        an update, the weights its walk left are put back, or without them a walk under these
        masks rebuilds them)."""
        self.restore()
        fp = Fingerprint()
        try:
            if self.update is not None and masks.walked is not None:
                self._put_back(masks, fp)
            elif self.update is not None:
                self._sequential(lambda name, stats: unpackbits(*masks.layers[name]), fp)
                return fp.hexdigest()
            else:
                for name, lin in self.linears.items():
                    packed, shape = masks.layers[name]
                    mask = unpackbits(packed, shape).to(lin.weight.device)
                    self._apply(name, lin, mask, packed, fp)
        except BaseException:
            self.restore()
            raise
        return fp.hexdigest()

    @torch.no_grad()
    def restore(self) -> None:
        """Put back what the last prune zeroed (nothing to do after a restore, or with keep=None)."""
        for name, undo in reversed(self._undo.items()):  # last pruned first: exact even if a
            # weight is reached under two names
            weight = self.linears[name].weight
            mask = unpackbits(undo.packed.to(weight.device), undo.shape)
            weight.masked_scatter_(mask, undo.values.to(weight.device))
        self._undo.clear()
        for name in reversed(self._pruned):
            self.linears[name].weight.copy_(self.dense[name])
        self._pruned.clear()

    def sparsity(self) -> SparsityReport:
        return measure_sparsity(self.linears)

    # -- internals -----------------------------------------------------------------------
    def _masks_into(self, tree, formula: str, fp: Fingerprint,
                    walked: dict[str, torch.Tensor] | None = None) -> None:
        """Every layer's mask into ``fp``, the model left as it was. An "obs" update changes
        no mask: with dense statistics the masks are scored without the walk. When the walk
        updated the weights, ``walked`` (if given) receives each layer's weights outside its
        mask, on the host: what ``prune_with`` puts back instead of walking again."""
        if self.calibration == "sequential" or self.update in SWEEPS:  # masks made by the walk
            try:
                self._prune_into(tree, formula, fp)
                if walked is not None and self.update is not None:
                    for name, lin in self.linears.items():
                        mask = unpackbits(*fp.packed[name]).to(lin.weight.device)
                        walked[name] = lin.weight.detach()[~mask].cpu()
            finally:
                self.restore()
            return
        for name in self.linears:
            fp.add(name, self._layer_mask(name, tree, formula, self.stats[name]))

    def _layer_mask(self, name: str, tree, formula: str, stats: LayerStats) -> torch.Tensor:
        scores = metric_scores(tree, self.linears[name].weight, stats)
        check_scores(scores, formula)
        return make_mask(scores, self._structure_of(name))

    def _structure_of(self, name: str) -> Structure:
        return self.structure if self.sparsities is None else \
            replace(self.structure, sparsity=self.sparsities[name])

    def _prune_into(self, tree, formula: str, fp: Fingerprint) -> None:
        self.restore()
        try:
            if self.calibration == "sequential" or self.update is not None:
                self._sequential(lambda name, stats: self._layer_mask(name, tree, formula, stats),
                                 fp, tree, formula)
            else:
                for name, lin in self.linears.items():
                    self._prune_layer(name, lin, self._layer_mask(name, tree, formula,
                                                                  self.stats[name]), fp)
        except BaseException:
            self.restore()
            raise

    def _put_back(self, masks: PackedMasks, fp: Fingerprint) -> None:
        """The model an update's walk left (its masks and the weights it kept), copied back."""
        for name, lin in self.linears.items():
            packed, shape = masks.layers[name]
            mask = unpackbits(packed, shape).to(lin.weight.device)
            fp.add_packed(name, packed, shape)
            self._keep(name)
            lin.weight.zero_()
            lin.weight.masked_scatter_(~mask, masks.walked[name].to(lin.weight.device))

    def _prune_layer(self, name: str, lin: nn.Linear, mask: torch.Tensor, fp: Fingerprint) -> None:
        # packed and sent once: for the fingerprint and the undo
        self._apply(name, lin, mask, packbits(mask).cpu(), fp)

    def _apply(self, name: str, lin: nn.Linear, mask: torch.Tensor, packed: torch.Tensor,
               fp: Fingerprint) -> None:
        fp.add_packed(name, packed, mask.shape)
        if self.keep == "host":
            self._undo[name] = _Undo(packed, lin.weight[mask].cpu(), mask.shape)
        elif self.keep == "copy":
            if not self.dense:  # filled once, by the first engine of the model that prunes
                self.dense.update(dense_copy(self.linears))
            self._pruned.append(name)
        lin.weight.masked_fill_(mask, 0)

    def _sequential(self, mask_of: Callable[[str, LayerStats], torch.Tensor],
                    fp: Fingerprint, tree=None, formula: str = "metric") -> None:
        """Walk the blocks: each linear is masked by ``mask_of(name, its statistics)`` (X
        measured on this walk with sequential calibration) and pruned, or pruned and updated;
        under the sweep, the metric ``tree`` chooses its masks inside the solver instead (without
        a tree, as when ``prune_with`` brings the sweep's masks, the solver runs under them)."""
        prefix = layers_prefix(self.model)
        sequential = self.calibration == "sequential"

        def visit(i: int, block: nn.Module, run) -> None:
            linears = {f"{prefix}.{i}.{n}": m for n, m in block_linears(block).items()}
            inputs = accumulate_inputs(linears, lambda m: _BlockInputs(m, self.update, sequential),
                                       run)
            for name, lin in linears.items():
                stats = self.stats[name] if not sequential else \
                    {**self.stats[name], "X": inputs[name].x.value()}
                if self.update in SWEEPS and tree is not None:
                    self._sweep_layer(name, lin, tree, formula, stats, inputs[name].hessian.H, fp)
                    continue
                mask = mask_of(name, stats).to(lin.weight.device)
                if self.update is None:
                    self._prune_layer(name, lin, mask, fp)
                else:
                    self._update_layer(name, lin, mask, inputs[name].hessian.H, fp)

        desc = "sequential calibration" if self.update is None else "pruning and updating"
        walk(self.model, self.calib, visit, self.progress, desc=desc)

    def _update_layer(self, name: str, lin: nn.Linear, mask: torch.Tensor, H: torch.Tensor,
                      fp: Fingerprint) -> None:
        """The layer pruned with ``mask`` and its kept weights reconstructed (OBS, SparseGPT's
        solver under the fixed mask; with "lsq", solved exactly)."""
        fp.add(name, mask)
        self._keep(name)
        weight = lsq_weight(lin.weight, H, mask) if self.update in LSQS else \
            sparsegpt_weight(lin.weight, H, self.structure, mask=mask)
        lin.weight.copy_(weight.to(lin.weight.dtype))


    def _sweep_layer(self, name: str, lin: nn.Linear, tree, formula: str, stats: LayerStats,
                     H: torch.Tensor, fp: Fingerprint) -> None:
        """The layer pruned and updated by SparseGPT's sweep, each block's mask chosen by the
        metric on the block's columns: their weights as updated so far, their statistics, and
        H from this walk's Hessian (the one the solver uses)."""
        factor = inverse_hessian_factor(H)  # once: for the terminal H and for the solver
        if "H" in stats:
            stats = {**stats, "H": obs_curvature(H, factor=factor)}
        # the whole layer first, as the other updates do: a metric that cannot rank it
        # (constant, NaN) is refused, not given masks by position block after block
        check_scores(metric_scores(tree, lin.weight, stats), formula)
        structure = self._structure_of(name)
        width = lin.in_features

        def choose(W_cols: torch.Tensor, start: int, stop: int) -> torch.Tensor:
            part = {k: v[..., start:stop] for k, v in stats.items()}
            scores = metric_scores(tree, W_cols, part)
            check_scores(scores, formula, constant_ok=True)  # a block may tie; its layer does not
            return block_mask(scores, structure, start, stop, width)

        weight, mask = obs_sweep(lin.weight, H, structure, choose, factor=factor)
        if self.update == "sweep-lsq":
            weight = lsq_weight(lin.weight, H, mask)
        self._keep(name)
        fp.add(name, mask)
        lin.weight.copy_(weight.to(lin.weight.dtype))

    def _keep(self, name: str) -> None:
        """Before an update changes a layer: the dense copy made (once), the layer noted."""
        if self.keep == "copy":
            if not self.dense:
                self.dense.update(dense_copy(self.linears))
            self._pruned.append(name)


KEEPS = ("host", "copy", None)


class _BlockInputs:
    """What one walk through a block gathers at a linear's input: X (mean squared input, for
    sequential calibration) and, for an update, the Hessian."""

    def __init__(self, linear: nn.Linear, update: str | None, sequential: bool) -> None:
        self.x = SquaredInputMean(linear.in_features, linear.weight.device) if sequential \
            else None
        self.hessian = None if update is None else \
            HessianAccumulator(linear.in_features, linear.weight.device)

    def add(self, inp: torch.Tensor) -> None:
        if self.x is not None:
            self.x.add(inp)
        if self.hessian is not None:
            self.hessian.add(inp)


def undo_kind(linears: dict[str, nn.Linear]) -> str:
    """How a search undoes a prune: from a dense copy when the weights live on the CPU (the copy
    shares their memory pool, and a copy back is ~10x faster than scattering what was zeroed),
    else by the zeroed values kept on the host (accelerator memory holds nothing more)."""
    return "copy" if all(m.weight.device.type == "cpu" for m in linears.values()) else "host"


def dense_copy(linears: dict[str, nn.Linear]) -> dict[str, torch.Tensor]:
    """The linear weights, copied to the host (one tensor per weight, even under two names)."""
    copies: dict[int, torch.Tensor] = {}
    out = {}
    for name, m in linears.items():
        w = m.weight
        if id(w) not in copies:
            copies[id(w)] = w.detach().to("cpu", copy=True)
        out[name] = copies[id(w)]
    return out


@contextmanager
def weights_kept_on_host(linears: dict[str, nn.Linear]) -> Iterator[None]:
    """For a method that changes every weight (SparseGPT updates the ones it keeps): a copy of
    the layers on the host while it runs, copied back afterwards, whatever happens."""
    saved = {n: m.weight.detach().to("cpu", copy=True) for n, m in linears.items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, m in linears.items():
                m.weight.copy_(saved[n])
