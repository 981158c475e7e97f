"""Built-in metrics, as formula strings in the metric language.

W is already |weight| and X >= 0, so e.g. Wanda's |W|*sqrt(X) is written
``mul(W, sqrt(X))``.
"""

from __future__ import annotations

BUILTINS: dict[str, str] = {
    # Magnitude pruning: |W|.
    "magnitude": "abs(W)",
    # Wanda (Sun et al. 2023): |W| * ||X_j||_2 written with X = mean of squares.
    "wanda": "mul(W, sqrt(X))",
    # The metric published with Pruner-Zero (data/best_tree.json).
    "pruner-zero": "mul(abs(mul(W, W)), mms(G))",
    # GBLM-Pruner: |W| * (sqrt(X) + alpha * G) with their gradient scale alpha = 100.
    "gblm": "mul(W, add(sqrt(X), mul(100, G)))",
    # RIA (Zhang et al. 2024): |W| relative to its column's and its row's sums, times
    # ||X_j||_2 ** 0.5 (their a = 0.5), i.e. X ** 0.25 (needs the ops of space "extended").
    "ria": "mul(add(coln(W), rown(W)), sqrt(sqrt(X)))",
}
"""Metric name -> formula."""
