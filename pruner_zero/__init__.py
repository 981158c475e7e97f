"""pruner-zero: discover pruning metrics for LLMs by genetic programming.

``pruner_zero.search(model, out, ...)`` runs a search (see ``pruner_zero.search.api``).
The name shadows the ``pruner_zero.search`` subpackage as an attribute, so import
its modules with ``from pruner_zero.search.loop import ...``.
"""
from .search.api import search

__all__ = ["search"]
