"""config.json: the layout's version, and the migration of the older layouts this version
still reads (``SearchConfig.from_dict`` and ``to_dict`` write and read the current one)."""
from __future__ import annotations

from typing import Any, Mapping

CONFIG_VERSION = 4
"""config.json's layout; ``from_dict`` reads this version and migrates older ones it knows
(2 -> 3: the runtime gained stats_device and stats_dtype; a version-2 run had them at their
defaults, statistics beside the weights in float32. 3 -> 4: confirm_windows and eval_windows;
a version-3 run confirmed and reported on whole splits, null)."""


def migrated(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """An older config.json as the current version says the same run (anything else unchanged)."""
    if not isinstance(d, Mapping):
        return d
    if d.get("version") == 2 and isinstance(d.get("runtime"), dict):
        d = {**d, "version": 3,
             "runtime": {**d["runtime"], "stats_device": None, "stats_dtype": "float32"}}
    if d.get("version") == 3:
        d = {**d, "version": 4, "confirm_windows": None, "eval_windows": None}
    return d
