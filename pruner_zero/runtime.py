"""Where and how models run: declared once, for `prune`, `eval`, `compare` and every task of a
search. A runtime changes how fast a number comes, never which number (up to floating point)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

STATS_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Runtime:
    device: str = "auto"  # auto | cpu | cuda[:N]
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    batch_size: int = 8  # evaluation windows per forward pass
    device_map: str | None = None  # e.g. "auto": a model spread over several GPUs
    revision: str | None = None  # hub branch, tag or commit of every hub model
    trust_remote_code: bool = False
    stats_device: str | None = None  # where X and G live (None: beside each weight; "cpu": host)
    stats_dtype: str = "float32"  # what G is stored in (X stays float32)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_types(self) -> None:
        """The Python API's arguments, as strictly as the CLI's: one clear error, not a
        TypeError from deep inside."""
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ConfigError(f"batch_size must be an integer, got {self.batch_size!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise ConfigError(f"trust_remote_code must be True or False, got "
                              f"{self.trust_remote_code!r}")
        for name in ("device", "dtype", "stats_dtype") + \
                tuple(n for n in ("device_map", "revision", "stats_device")
                      if getattr(self, n) is not None):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
