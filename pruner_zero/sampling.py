"""What a task and a measurement protocol share: a model and the calibration it is pruned with.

One declaration of these fields (and of the check of their types), so that a task of a search
and the protocol of a prune cannot drift apart on what "calibrated the same way" means.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    model: str
    data_dir: str | None = None
    calib_split: str = "train"
    nsamples: int = 128
    seqlen: int | None = None  # None: min(2048, what the model allows)
    seed: int = 0
    calibration: str = "dense"  # or "sequential": X measured layer by layer on pruned inputs
    calib_data: str | None = None  # None: calib_split of the data; "c4" or a JSON-lines file
    text_join: str = "concat"  # hub WikiText-2 rows as they are, or "wanda": a blank line between

    def check_sampling(self, where: str = "") -> None:
        """Integers that are integers: `seed="0"` would silently draw other windows than 0."""
        for name in ("nsamples", "seed") + (("seqlen",) if self.seqlen is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where}{name} must be an integer, got {value!r}")
        for name in ("model", "calib_split", "calibration", "text_join") + \
                tuple(n for n in ("data_dir", "calib_data") if getattr(self, n) is not None):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{where}{name} must be a string, got {getattr(self, name)!r}")
