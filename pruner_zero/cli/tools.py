"""`pruner-zero show` and `convert`: a metric's forms; a GGUF model dequantized once."""
from __future__ import annotations

import argparse

from ..errors import ModelError
from .common import log


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="dequantize a GGUF model into the cache (once per file); "
                                       "prints the path to give --model")
    p.add_argument("gguf", help="a .gguf file, or a directory holding one")
    p.add_argument("--cache-dir", default=None,
                   help="where the checkpoint goes (default $PRUNER_ZERO_CACHE or "
                        "~/.cache/pruner_zero; give the same --cache-dir to the later commands)")
    p.set_defaults(func=run_convert)

    p = sub.add_parser("show", help="print a metric's formula, sympy form and LaTeX")
    p.add_argument("metric", help="built-in name, formula, or metric file (@PATH or NAME.json; "
                                  "other text is a file only if it is no valid formula)")
    p.set_defaults(func=run_show)


def run_show(a: argparse.Namespace) -> int:
    from ..methods import metric_tree
    from ..metric.io import format_formula
    from ..metric.symbolic import to_latex, to_sympy

    tree = metric_tree(a.metric, "a formula")
    print(f"formula: {format_formula(tree)}")
    print(f"sympy:   {to_sympy(tree)}")
    print(f"latex:   {to_latex(tree)}")
    return 0


def run_convert(a: argparse.Namespace) -> int:
    """Dequantize a GGUF file into the cache once, so later commands load it in seconds."""
    from pathlib import Path

    from ..gguf import checkpoint_for, find_gguf
    from ..workbench import default_cache_dir

    path = find_gguf(a.gguf)
    if path is None:
        raise ModelError(f"{a.gguf} is not a .gguf file (nor a directory holding one)")
    source = checkpoint_for(path, Path(a.cache_dir) if a.cache_dir else default_cache_dir(), log)
    log(f"checkpoint: {source.checkpoint}")
    print(source.file)
    return 0
