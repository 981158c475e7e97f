"""A candidate's masks kept between its fingerprint and its evaluation: a search fingerprints
every offspring of a generation first (novelty), then measures them, and pruning with the kept
masks scores the metric once, not twice. The memo never changes a result: a candidate it has let
go is scored (or walked) again, giving the same masks and weights."""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..masks import PackedMasks

MASK_MEMO_BYTES = 1 << 30
"""Packed masks (1 bit per weight): about 75 candidates of a 135M model, one of a 7B model."""
WALKED_MEMO_BYTES = 4 << 30
"""Weights an update's walk left (``PackedMasks.walked``), held beside those masks so a candidate
under the sweep walks the blocks once, not once for its fingerprint and again to be measured:
about 20 candidates of a 135M model at 50%, per task. Beyond it the oldest give their weights up
(their masks stay) and are rebuilt by a walk under their masks, the same model bit for bit."""


class MaskMemo:
    """formula -> its PackedMasks, the most recent within ``MASK_MEMO_BYTES`` (and their walked
    weights within ``WALKED_MEMO_BYTES``). Off (``on`` False) when workers measure: nothing in
    this process would prune with them."""

    def __init__(self) -> None:
        self.held: OrderedDict[str, PackedMasks] = OrderedDict()
        self.mask_bytes = 0
        self.walked_bytes = 0
        self.on = True

    def remember(self, formula: str, masks: PackedMasks) -> None:
        if not self.on or masks.mask_nbytes > MASK_MEMO_BYTES:
            return
        if masks.walked_nbytes > WALKED_MEMO_BYTES:
            masks = masks.without_walked()
        self.held[formula] = masks
        self.mask_bytes += masks.mask_nbytes
        self.walked_bytes += masks.walked_nbytes
        while self.mask_bytes > MASK_MEMO_BYTES:
            self._forget(self.held.popitem(last=False)[1])
        for older, kept in list(self.held.items()):  # oldest first
            if self.walked_bytes <= WALKED_MEMO_BYTES:
                break
            if kept.walked is not None:
                self.walked_bytes -= kept.walked_nbytes
                self.held[older] = kept.without_walked()

    def pop(self, formula: str) -> PackedMasks | None:
        """A candidate's masks, let go (pruned with, or a cache served it); None if not held."""
        masks = self.held.pop(formula, None)
        if masks is not None:
            self._forget(masks)
        return masks

    def clear(self) -> None:
        self.held.clear()
        self.mask_bytes = self.walked_bytes = 0

    def _forget(self, masks: PackedMasks) -> None:
        self.mask_bytes -= masks.mask_nbytes
        self.walked_bytes -= masks.walked_nbytes
