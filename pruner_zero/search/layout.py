"""The names of a search run directory's files and the words its records use: one place for
the run directory (``rundir``), ``report``, ``compare`` and the CLI. No imports: anyone may read it."""

OK, INVALID, STOPPED = "ok", "invalid", "stopped_early"
"""The status of an evaluated candidate (evaluations.jsonl, checkpoint.json)."""
CONFIG = "config.json"
CHECKPOINT = "checkpoint.json"
EVALUATIONS = "evaluations.jsonl"
BEST_JSON = "best_metric.json"
BEST_TXT = "best_metric.txt"
HALL_OF_FAME = "hall_of_fame.csv"
BASELINES = "baselines.csv"
HISTORY = "history.csv"
CHECKPOINT_VERSION = 2
BASELINE_FIELDS = ["phase", "task", "metric", "formula", "seed", "split", "windows", "ppl"]
HISTORY_FIELDS = ["generation", "best", "median", "evaluated", "valid", "cached", "seconds", "polish"]
