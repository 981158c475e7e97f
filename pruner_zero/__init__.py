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

from . import search as _search_package  # noqa: E402,F401  (light; see ``search`` below)

__all__ = ["SearchConfig", "prune", "search"]


def search(model: Any = None, out: Any = None, **options: Any) -> Any:
    """Run a search: ``pruner_zero.search.api.search``, imported on the first call so that
    ``import pruner_zero`` (and every CLI start) does not pay for torch. Defined after the
    subpackage is imported, so this function, not the subpackage, is ``pruner_zero.search``."""
    from .search.api import search as run

    return run(model, out, **options)


def prune(*args: Any, **kwargs: Any) -> Any:
    """Prune and measure: ``pruner_zero.pruning.prune``, imported on the first call (torch)."""
    from .pruning import prune as run

    return run(*args, **kwargs)


def __getattr__(name: str) -> Any:
    """``SearchConfig`` on first use: it checks options with the metric language (torch)."""
    if name == "SearchConfig":
        from .search.config import SearchConfig

        return SearchConfig
    raise AttributeError(f"module 'pruner_zero' has no attribute {name!r}")
