"""Search spaces: which terminals and ops the GP search may combine.

Spaces live as commented YAML files in the package's ``pruner_zero/search_spaces/``
folder so experiments can be changed without touching code.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from deap import gp

from pruner_zero.errors import MetricError
from pruner_zero.files import looks_like_path, read_yaml
from pruner_zero.metric import registry

SPACES_DIR = Path(__file__).parents[1] / "search_spaces"  # inside the package: a wheel has it
"""Folder holding the built-in ``NAME.yaml`` search spaces."""


def build_pset(terminals: tuple[str, ...], unary_ops: tuple[str, ...],
               binary_ops: tuple[str, ...]) -> gp.PrimitiveSet:
    """A DEAP PrimitiveSet named "metric" whose arguments are the given terminals."""
    pset = gp.PrimitiveSet("metric", len(terminals))
    pset.renameArguments(**{f"ARG{i}": name for i, name in enumerate(terminals)})
    for name in terminals:  # DEAP renames only .value; keep .name in step
        pset.mapping[name].name = name
    for name in (*unary_ops, *binary_ops):
        op = registry.op(name)
        pset.addPrimitive(op.torch, op.arity, name=name)
    return pset


def full_pset() -> gp.PrimitiveSet:
    """Every op and terminal of the registry: used to parse and rebuild user metrics."""
    return _full_pset(registry.version())


@lru_cache(maxsize=4)
def _full_pset(version: int) -> gp.PrimitiveSet:  # rebuilt when the registry changes
    return build_pset(tuple(registry.TERMINALS), registry.names(1), registry.names(2))


@dataclass
class SearchSpace:
    """Terminals, ops and tree-size limits of one GP search."""

    name: str
    terminals: tuple[str, ...]
    unary_ops: tuple[str, ...]
    binary_ops: tuple[str, ...]
    init_min_depth: int
    init_max_depth: int
    max_height: int
    max_size: int
    _pset: gp.PrimitiveSet | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for key in ("terminals", "unary_ops", "binary_ops"):
            if isinstance(getattr(self, key), str):
                raise MetricError(f"search space '{self.name}': '{key}' must be a list of names, not a string.")
        self.terminals = tuple(self.terminals)
        self.unary_ops = tuple(self.unary_ops)
        self.binary_ops = tuple(self.binary_ops)
        _validate(self)

    @property
    def ops(self) -> tuple[str, ...]:
        """All op names of this space."""
        return self.unary_ops + self.binary_ops

    def pset(self) -> gp.PrimitiveSet:
        """The DEAP PrimitiveSet of this space (built once, then cached)."""
        if self._pset is None:
            self._pset = build_pset(self.terminals, self.unary_ops, self.binary_ops)
        return self._pset


def _names(space: str, key: str, value: Any, known: tuple[str, ...] | list[str], kind: str) -> None:
    """Check a list of names against the known ones."""
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise MetricError(f"search space '{space}': '{key}' must be a list of names.")
    for v in value:
        if v not in known:
            raise MetricError(
                f"search space '{space}': unknown {kind} '{v}' in '{key}'; known: {', '.join(known)}.")
    if len(set(value)) != len(value):
        raise MetricError(f"search space '{space}': '{key}' lists a name twice.")


def _validate(s: SearchSpace) -> None:
    """Raise MetricError for the first inconsistent field."""
    if not isinstance(s.name, str) or not s.name:
        raise MetricError("search space 'name' must be a non-empty string.")
    _names(s.name, "terminals", s.terminals, tuple(registry.TERMINALS), "terminal")
    _names(s.name, "unary_ops", s.unary_ops, registry.names(1), "unary op")
    _names(s.name, "binary_ops", s.binary_ops, registry.names(2), "binary op")
    if not s.terminals:
        raise MetricError(f"search space '{s.name}': 'terminals' must not be empty.")
    if not s.unary_ops and not s.binary_ops:
        raise MetricError(f"search space '{s.name}': it needs at least one unary or binary op.")
    for key in ("init_min_depth", "init_max_depth", "max_height", "max_size"):
        value = getattr(s, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise MetricError(f"search space '{s.name}': '{key}' must be a non-negative integer, got {value!r}.")
    if s.init_min_depth > s.init_max_depth:
        raise MetricError(f"search space '{s.name}': init_min_depth ({s.init_min_depth}) "
                          f"exceeds init_max_depth ({s.init_max_depth}).")
    if s.init_max_depth > s.max_height:
        raise MetricError(f"search space '{s.name}': init_max_depth ({s.init_max_depth}) "
                          f"exceeds max_height ({s.max_height}).")
    if s.max_size < 1:
        raise MetricError(f"search space '{s.name}': max_size must be at least 1.")
    arity = 2 if s.binary_ops else 1  # the largest tree the initial population may draw
    largest = 2 ** (s.init_max_depth + 1) - 1 if arity == 2 else s.init_max_depth + 1
    if s.max_size < largest:
        raise MetricError(f"search space '{s.name}': max_size ({s.max_size}) is below the "
                          f"{largest} nodes a tree of init_max_depth {s.init_max_depth} can have; "
                          f"raise max_size or lower init_max_depth")


_FIELDS = tuple(f.name for f in dataclasses.fields(SearchSpace) if f.init)


def available_spaces() -> list[str]:
    """Names of the built-in spaces (files in ``pruner_zero/search_spaces/``)."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))


def load_space(name_or_path: str | Path) -> SearchSpace:
    """Load a built-in space by name (``paper``, ``small``) or a YAML file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not path.is_file():
        if looks_like_path(text, (".yaml", ".yml")):
            raise MetricError(f"search space file not found: {text}")
        path = SPACES_DIR / f"{text}.yaml"
        if not path.is_file():
            raise MetricError(
                f"unknown search space '{text}'; available: {', '.join(available_spaces()) or 'none'}.")
    data = read_yaml(path, "search space file", MetricError)
    if not isinstance(data, dict):
        raise MetricError(f"search space file {path} must contain a YAML mapping of fields.")
    data = dict(data)
    data.setdefault("name", path.stem)
    unknown = sorted(set(data) - set(_FIELDS), key=str)
    if unknown:
        raise MetricError(f"search space file {path}: unknown field(s) {', '.join(map(str, unknown))}; "
                          f"known: {', '.join(_FIELDS)}.")
    missing = [k for k in _FIELDS if k not in data]
    if missing:
        raise MetricError(f"search space file {path}: missing field(s) {', '.join(missing)}.")
    for key in ("terminals", "unary_ops", "binary_ops"):
        value = data[key]
        if value is None:
            value = []
        if not isinstance(value, list):
            raise MetricError(f"search space file {path}: '{key}' must be a list of names.")
        data[key] = tuple(value)
    return SearchSpace(**{k: data[k] for k in _FIELDS})
