"""pruner-zero: discover pruning metrics for LLMs by genetic programming.

``pruner_zero.search(model, out, ...)`` or ``pruner_zero.search(SearchConfig(...))`` runs a
search (see ``pruner_zero.search.api`` and ``pruner_zero.search.config``);
``pruner_zero.prune(model, metric, sparsity=0.5, ...)`` prunes and measures (``pruner_zero.pruning``).
The name ``search`` shadows the ``pruner_zero.search`` subpackage as an attribute, so import
its modules with ``from pruner_zero.search.loop import ...``.
"""
import os
import sys
from typing import Any

try:  # before torch is imported: in a deleted working directory it aborts the process
    os.getcwd()
except FileNotFoundError:
    sys.exit("error: the working directory no longer exists; cd to an existing directory "
             "and run again")

from .search.api import search  # noqa: E402
from .search.config import SearchConfig  # noqa: E402

__all__ = ["SearchConfig", "prune", "search"]


def __getattr__(name: str) -> Any:
    """``prune`` on first use: it brings torch and transformers, which ``import pruner_zero``
    (and every CLI start) should not pay for."""
    if name == "prune":
        from .pruning import prune

        return prune
    raise AttributeError(f"module 'pruner_zero' has no attribute {name!r}")
