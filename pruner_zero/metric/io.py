"""Read and write metrics: formula text, the paper's JSON trees, files.

Formula text is DEAP's own syntax, e.g. ``mul(abs(mul(W, W)), mms(G))``; it is
parsed by a small recursive-descent parser, never by ``eval``.
"""

from __future__ import annotations

import math

import re
from pathlib import Path
from typing import Any, Sequence

from deap import gp

from pruner_zero.errors import MetricError
from pruner_zero.files import atomic_write_json, looks_like_path, read_json, user_path
from pruner_zero.metric import registry
from pruner_zero.metric.builtin import BUILTINS
from pruner_zero.metric.space import full_pset
from pruner_zero.metric.tree import Constant, format_number, is_constant, label

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<punct>[(),]))"
)
# Limits that turn absurd input into one clear error instead of a recursion or a long stall;
# every formula of the paper and of our search spaces is far inside them.
MAX_FORMULA_CHARS = 4000
MAX_NESTING = 64
MAX_NUMBER_CHARS = 32
MAX_ABS_CONSTANT = 1e12
RECIPE_KEYS = ("allocation", "update")
"""The keys that make a metric file a recipe file (``pruner_zero.recipe`` reads those)."""


def is_recipe_file(obj: Any) -> bool:
    """A metric file's JSON with a recipe beside its metric."""
    return isinstance(obj, dict) and any(k in obj for k in RECIPE_KEYS)


def _shown(text: str) -> str:
    """The formula as an error message quotes it: whole when short, its start when long."""
    return repr(text) if len(text) <= 80 else repr(text[:60]) + f"... ({len(text)} characters)"


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, position) tokens; kind is num, name or one of ( ) ,."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            bad = len(text[pos:]) - len(text[pos:].lstrip()) + pos
            raise MetricError(f"cannot parse metric formula {_shown(text)}: "
                              f"unexpected character {text[bad]!r} at position {bad}.")
        kind = m.lastgroup or ""
        value = m.group(kind)
        start = m.start(kind)
        tokens.append((value if kind == "punct" else kind, value, start))
        pos = m.end()
    return tokens


class _Parser:
    """Recursive descent over ``expr := NUMBER | NAME | NAME '(' expr (',' expr)* ')'``."""

    def __init__(self, text: str, pset: gp.PrimitiveSet) -> None:
        self.text = text
        self.tokens = _tokenize(text) if len(text) <= MAX_FORMULA_CHARS else []
        self.i = 0
        self.nodes: list[Any] = []
        self.prims = {p.name: p for p in pset.primitives[pset.ret]}
        self.terms = {label(t): t for t in pset.terminals[pset.ret] if not is_constant(t)}

    def _peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _fail(self, message: str) -> MetricError:
        return MetricError(f"cannot parse metric formula {_shown(self.text)}: {message}.")

    def parse(self) -> gp.PrimitiveTree:
        if len(self.text) > MAX_FORMULA_CHARS:
            raise MetricError(f"metric formula is {len(self.text)} characters long; the limit is "
                              f"{MAX_FORMULA_CHARS}.")
        if not self.tokens:
            raise MetricError("metric formula is empty.")
        self._expr(0)
        tok = self._peek()
        if tok is not None:
            if tok[0] == ")":
                raise self._fail(f"unbalanced parentheses: unexpected ')' at position {tok[2]}")
            raise self._fail(f"unexpected trailing text {self.text[tok[2]:]!r} at position {tok[2]}")
        return gp.PrimitiveTree(self.nodes)

    def _expr(self, depth: int) -> None:
        if depth > MAX_NESTING:
            raise self._fail(f"formula is nested more than {MAX_NESTING} levels deep")
        tok = self._peek()
        if tok is None:
            raise self._fail("unbalanced parentheses: the formula ends where an argument was expected")
        kind, value, pos = tok
        self.i += 1
        if kind == "num":
            try:
                self.nodes.append(Constant(check_constant(value)))
            except MetricError as exc:
                raise self._fail(f"{exc} (at position {pos})") from None
            return
        if kind != "name":
            what = "')'" if kind == ")" else repr(kind)
            raise self._fail(f"expected an op, terminal or number at position {pos}, found {what}")
        nxt = self._peek()
        if nxt is None or nxt[0] != "(":
            if value in self.terms:
                self.nodes.append(self.terms[value])
                return
            if value in self.prims:
                raise self._fail(f"op '{value}' at position {pos} needs its arguments in parentheses")
            raise self._fail(f"unknown terminal '{value}' at position {pos}; known: {', '.join(self.terms)}")
        if value not in self.prims:
            if value in self.terms:
                raise self._fail(f"'{value}' at position {pos} is a terminal, not an op, and takes no arguments")
            raise self._fail(f"unknown op '{value}' at position {pos}; known ops: {', '.join(self.prims)}")
        prim = self.prims[value]
        self.nodes.append(prim)
        self.i += 1  # the '('
        count = 0
        if self._peek() is not None and self._peek()[0] == ")":  # type: ignore[index]
            self.i += 1
        else:
            while True:
                self._expr(depth + 1)
                count += 1
                tok = self._peek()
                if tok is None:
                    raise self._fail(f"unbalanced parentheses: missing ')' for '{value}' at position {pos}")
                self.i += 1
                if tok[0] == ")":
                    break
                if tok[0] != ",":
                    raise self._fail(f"expected ',' or ')' at position {tok[2]}, found {tok[1]!r}")
        if count != prim.arity:
            raise self._fail(f"wrong number of arguments for '{value}' at position {pos} "
                             f"(expects {prim.arity}, got {count})")


def check_constant(text: str) -> float:
    """The value of a numeric literal within the limits (finite, short, not astronomically large)."""
    if len(text) > MAX_NUMBER_CHARS:
        raise MetricError(f"constant {text[:20]}... has {len(text)} characters; the limit is "
                          f"{MAX_NUMBER_CHARS}")
    value = float(text)
    if not math.isfinite(value):
        raise MetricError(f"constant {text} is not a finite number")
    if abs(value) > MAX_ABS_CONSTANT:
        raise MetricError(f"constant {text} is larger than {MAX_ABS_CONSTANT:g} in magnitude")
    return value


def parse_formula(text: str, pset: gp.PrimitiveSet | None = None) -> gp.PrimitiveTree:
    """Parse ``mul(abs(mul(W, W)), mms(G))`` into a tree over ``pset`` (default: every op).

    Numbers (``100``, ``0.5``, ``1e-3``, ``-2``) become constant leaves.
    """
    if not isinstance(text, str):
        raise MetricError(f"metric formula must be a string, got {type(text).__name__}.")
    return _Parser(text, pset or full_pset()).parse()


def format_formula(tree: gp.PrimitiveTree) -> str:
    """Formula text of a tree; ``parse_formula`` reads it back to the same tree."""
    return str(tree)


# ---------------------------------------------------------------- paper JSON

def _json_node(obj: Any, where: str, nodes: list[Any], pset: gp.PrimitiveSet, depth: int) -> None:
    """Append the prefix nodes of one paper-JSON node (validated) to ``nodes``."""
    if depth > MAX_NESTING:
        raise MetricError(f"metric JSON is nested more than {MAX_NESTING} levels deep.")
    if not isinstance(obj, dict):
        raise MetricError(f"metric JSON node at {where} must be an object with a 'data' key, "
                          f"got {type(obj).__name__}.")
    extra = set(obj) - {"data", "left", "right"}
    if extra:
        raise MetricError(f"metric JSON node at {where} has unknown key(s) {sorted(extra)}; "
                          "allowed: data, left, right.")
    if "data" not in obj:
        raise MetricError(f"metric JSON node at {where} has no 'data' key.")
    data = obj["data"]
    children = [k for k in ("left", "right") if k in obj]
    if isinstance(data, bool) or not isinstance(data, (str, int, float)):
        raise MetricError(f"metric JSON node at {where}: 'data' must be an op, terminal or number, got {data!r}.")
    text = str(data)
    if text in registry.OPS:
        prim = pset.mapping.get(text)
        if prim is None:
            raise MetricError(f"metric JSON node at {where}: op '{text}' is not available here.")
        arity = registry.OPS[text].arity
        expected = ["left", "right"][:arity]
        if children != expected:
            kind = "unary" if arity == 1 else "binary"
            raise MetricError(f"metric JSON node at {where}: {kind} op '{text}' needs exactly the "
                              f"child key(s) {expected}, got {children}.")
        nodes.append(prim)
        for key in expected:
            _json_node(obj[key], f"{where}.{key}", nodes, pset, depth + 1)
        return
    term = pset.mapping.get(text)
    number = _TOKEN.fullmatch(text)
    if term is not None and term.arity == 0:
        leaf: Any = term
    elif isinstance(data, (int, float)) or (number is not None and number.lastgroup == "num"):
        try:
            leaf = Constant(check_constant(text))
        except (MetricError, OverflowError) as exc:
            raise MetricError(f"metric JSON node at {where}: {exc}.") from None
    else:
        raise MetricError(f"metric JSON node at {where}: unknown op or terminal '{text}'; "
                          f"known: {', '.join(list(registry.OPS) + [label(t) for t in pset.terminals[pset.ret]])}.")
    if children:
        raise MetricError(f"metric JSON node at {where}: leaf '{text}' must not have children.")
    nodes.append(leaf)


def from_paper_json(obj: Any, pset: gp.PrimitiveSet | None = None) -> gp.PrimitiveTree:
    """Tree from the original repository's nested ``{"data", "left", "right"}`` JSON."""
    nodes: list[Any] = []
    _json_node(obj, "root", nodes, pset or full_pset(), 0)
    return gp.PrimitiveTree(nodes)


def to_paper_json(tree: gp.PrimitiveTree) -> dict[str, Any]:
    """Nested paper JSON (unary ops use only "left"; constants as text, e.g. "100")."""
    stack: list[dict[str, Any]] = []
    for node in reversed(tree):
        if node.arity == 0:
            stack.append({"data": format_number(node.value) if is_constant(node) else label(node)})
            continue
        out: dict[str, Any] = {"data": node.name, "left": stack.pop()}
        if node.arity == 2:
            out["right"] = stack.pop()
        stack.append(out)
    if len(stack) != 1:
        raise MetricError(f"metric {tree} is malformed and cannot be written as JSON.")
    return stack[0]


# --------------------------------------------------------------------- files

def load_metric_file(path: str | Path) -> gp.PrimitiveTree:
    """Load a ``.json`` metric: paper format, or ``{"formula": "..."}``."""
    path = Path(path)
    if not _is_file(str(path)):
        raise MetricError(f"metric file not found: {str(path)[:200]}")
    obj = read_json(path, "metric file", MetricError, max_depth=MAX_NESTING + 4)
    if is_recipe_file(obj):
        raise MetricError(f"{path} is a recipe file (a metric with its allocation and update): "
                          "give it where a whole recipe is used (prune --metric, compare "
                          "--metrics), not as a metric alone")
    if isinstance(obj, dict) and "formula" in obj:
        formula = obj["formula"]
        if not isinstance(formula, str):
            raise MetricError(f"metric file {path}: 'formula' must be a string.")
        try:
            return parse_formula(formula)
        except MetricError as exc:
            raise MetricError(f"metric file {path}: {exc}") from exc
    try:
        return from_paper_json(obj)
    except MetricError as exc:
        raise MetricError(f"metric file {path}: {exc}") from exc


def save_metric_json(tree: gp.PrimitiveTree, path: str | Path) -> None:
    """Write the metric in the paper's JSON format (readable by the original code too)."""
    atomic_write_json(path, to_paper_json(tree))


def _is_file(spec: str) -> bool:
    """An existing file; a name the file system cannot even hold (too long, NUL) is not one."""
    try:
        return user_path(spec).is_file()
    except (OSError, ValueError):
        return False


def metric_file_of(spec: str) -> str | None:
    """The file a metric argument names, by the rule of ``resolve_metric``; None for a built-in
    name or a formula (or text that is neither and names no file)."""
    spec = spec.strip()
    if spec.startswith("@"):
        return spec[1:]
    if spec.endswith(".json"):
        return spec
    if spec in BUILTINS:
        return None
    try:
        parse_formula(spec)
    except MetricError:
        return spec if _is_file(spec) else None
    return None


def resolve_metric(spec: str) -> tuple[str, gp.PrimitiveTree]:
    """(display name, tree) for a built-in name, a formula, or a metric file.

    The rule: ``@path`` and names ending in ``.json`` are files; otherwise a built-in name or a
    valid formula wins, and only text that is neither but names an existing file is read as a
    file (so a file called ``W`` in the working directory never replaces the formula ``W``).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise MetricError("metric is empty: give a built-in name, a .json file or a formula.")
    spec = spec.strip()
    path = metric_file_of(spec)
    if path is not None:
        return path, load_metric_file(path)
    if spec in BUILTINS:
        return spec, parse_formula(BUILTINS[spec])
    try:
        tree = parse_formula(spec)
    except MetricError as exc:
        if looks_like_path(spec, (".json",)):
            raise MetricError(f"metric file not found: {spec}") from None
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", spec) and spec not in full_pset().mapping:
            raise MetricError(f"unknown metric '{spec}': not a built-in ({', '.join(BUILTINS)}), "
                              "a formula, or an existing file.") from None
        raise exc
    return format_formula(tree), tree


def split_metric_list(spec: str | Sequence[str] | None, option: str = "metric list") -> list[str]:
    """Metrics separated by commas outside parentheses (formulas hold commas themselves);
    unbalanced parentheses are an error, never a metric silently dropped."""
    if spec is None:
        return []
    if not isinstance(spec, str):
        return [str(s).strip() for s in spec if str(s).strip()]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise MetricError(f"{option}: unbalanced parentheses, ')' at position {i} closes "
                              f"nothing in {_shown(spec)}")
        if ch == "," and depth == 0:
            parts.append(spec[start:i].strip())
            start = i + 1
    if depth != 0:
        raise MetricError(f"{option}: unbalanced parentheses, {depth} '(' never closed in "
                          f"{_shown(spec)}")
    parts.append(spec[start:].strip())
    return [p for p in parts if p]
