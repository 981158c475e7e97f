"""Shared fixtures and helpers: a tiny random LLaMA built in code, the real assets in ../shared,
metric inputs, and the command lines and run directories of several test files."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from pruner_zero.metric import registry
from pruner_zero.search.rundir import CHECKPOINT, CONFIG, HALL_OF_FAME

try:  # property-based tests: reproducible in CI (derandomised, bounded); HYPOTHESIS_PROFILE=dev
    from hypothesis import HealthCheck, settings  # explores more, with fresh random examples

    settings.register_profile("ci", derandomize=True, max_examples=150, deadline=None,
                              print_blob=True, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=2000, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # the property tests skip themselves without hypothesis
    pass

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRUNER_ZERO_SHARED", REPO.parent / "shared"))
SHARED_MODEL = SHARED / "models" / "wiki-llama-5m"
SHARED_DATA = SHARED / "data" / "wikitext-2"

needs_shared = pytest.mark.skipif(
    not (SHARED_MODEL / "config.json").is_file() or not (SHARED_DATA / "test.txt").is_file(),
    reason=f"real assets absent: need {SHARED_MODEL} and {SHARED_DATA} "
           "(set PRUNER_ZERO_SHARED to the folder holding models/ and data/)")

TEXT = ("the quick brown fox jumps over the lazy dog . " * 40 +
        "a stitch in time saves nine , and the early bird catches the worm . " * 40)


def strict_loads(text: str):
    """json.loads that refuses Infinity and NaN, as strict parsers (jq, JavaScript) do."""
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ metrics
UNARY = {n: registry.op(n).torch for n in registry.names(1)}
BINARY = {n: registry.op(n).torch for n in registry.names(2)}

PAPER_JSON = ('{"data":"mul","left":{"data":"abs","left":{"data":"mul","left":{"data":"W"},'
              '"right":{"data":"W"}}},"right":{"data":"mms","left":{"data":"G"}}}')
PAPER_FORMULA = "mul(abs(mul(W, W)), mms(G))"


@pytest.fixture()
def wgx():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(8, 6, generator=g).abs()
    G = torch.rand(8, 6, generator=g)
    X = torch.rand(6, generator=g) + 0.01
    return W, G, X


def random_wgx(seed: int, dtype=torch.float64):
    """Random W (9 x 8, non-negative), G and X (positive) for comparing the scores of trees."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(9, 8, generator=g, dtype=dtype).abs(),
            torch.rand(9, 8, generator=g, dtype=dtype), torch.rand(8, generator=g, dtype=dtype) + 0.01)


def scores_of(tree, W, G=None, X=None, dtype=torch.float32, H=None):
    """score_metric with the base terminals given by position (None: absent)."""
    from pruner_zero.metric.tree import score_metric

    return score_metric(tree, {k: v for k, v in (("W", W), ("G", G), ("X", X), ("H", H))
                               if v is not None}, dtype)


def masks_of(engine, tree) -> dict[str, torch.Tensor]:
    """The masks a metric gives, read off the pruned weights (the random test models have no
    exact zeros of their own); the engine restores the dense model afterwards."""
    engine.prune(tree)
    try:
        return {n: (m.weight == 0).clone() for n, m in engine.linears.items()}
    finally:
        engine.restore()


# ------------------------------------------------------------------ the tiny model
def tiny_llama(seed: int = 0, layers: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def word_tokenizer():
    """A word-level tokenizer built in code, so tests need no files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for w in TEXT.split():
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.fixture
def tiny_model():
    return tiny_llama()


def write_tiny_assets(root: Path) -> Path:
    """A saved tiny model + tokenizer (`root/tiny-llama`) and its data (`root/data`:
    train/valid/test.txt); returns root."""
    model_dir = root / "tiny-llama"
    tiny_llama().save_pretrained(model_dir)
    word_tokenizer().save_pretrained(model_dir)
    data_dir = root / "data"
    data_dir.mkdir()
    (data_dir / "train.txt").write_text(TEXT)
    (data_dir / "valid.txt").write_text(TEXT[len(TEXT) // 4:])
    (data_dir / "test.txt").write_text(TEXT[: len(TEXT) // 2])
    return root


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A saved tiny model + tokenizer + data dir, for CLI and API tests."""
    return write_tiny_assets(tmp_path)


def write_corpus(path, docs):
    """A file in the C4 shard's format: one JSON object per line with a "text" field."""
    import gzip
    import json

    lines = "".join(json.dumps({"text": d, "timestamp": "2019-04-25", "url": "u"}) + "\n"
                    for d in docs)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path


def write_tasks_yaml(tmp_path, text):
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    return path


# ------------------------------------------------------------------ the command line
def run_main(capsys, *argv):
    """cli.main(argv) and what it printed: (exit code, stdout, stderr)."""
    from pruner_zero.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def base_args(tiny_dir, *extra):
    """prune's (and search's) options on the tiny assets: calibration, no cache."""
    return ["--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--nsamples", "2", "--seqlen", "16", "--device", "cpu", "--quiet", "--no-cache", *extra]


# ------------------------------------------------------------------ search runs
def protocol(tiny_dir: Path) -> list[str]:
    return ["--model", str(tiny_dir / "tiny-llama"), "--data-dir", str(tiny_dir / "data"),
            "--seqlen", "16", "--nsamples", "2", "--calib-split", "train", "--device", "cpu",
            "--cache-dir", str(tiny_dir / "stats-cache"), "--quiet"]


def quick_search(tiny_dir: Path, out: Path, generations: int = 1) -> list[str]:
    return ["search", *protocol(tiny_dir), "--space", "small", "--population", "4",
            "--generations", str(generations), "--gp-seed", "3", "--fitness-windows", "4",
            "--hof-size", "3", "--final-top", "1", "--polish", "0", "--confirm-seeds", "1",
            "--baselines", "wanda", "--out", str(out)]


def hall_of_fame(path: Path) -> list[dict]:
    with open(path / HALL_OF_FAME, newline="") as fh:
        return list(csv.DictReader(fh))


def checkpoint(path: Path) -> dict:
    return json.loads((path / CHECKPOINT).read_text())


def unfinished_after_generation_0(tiny_dir: Path, out: Path) -> None:
    """A run whose checkpoint holds generation 0 of 1: a resume has a whole generation to add."""
    from pruner_zero.cli import main

    assert main(quick_search(tiny_dir, out, generations=0)) == 0
    config = json.loads((out / CONFIG).read_text())
    config["gp"]["generations"] = 1
    (out / CONFIG).write_text(json.dumps(config))
    state = checkpoint(out)
    state["finished"] = False
    del state["final"]
    (out / CHECKPOINT).write_text(json.dumps(state))


def kill_mid_generation(argv: list[str], started: Callable[[], bool], timeout: float = 120,
                        pause: float = 0.001, group: bool = False) -> None:
    """Run `python -m pruner_zero *argv` as a process; SIGKILL it once `started()` is true (with
    its whole process group, e.g. its Ray processes, when `group`)."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "pruner_zero", *argv],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=group)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if started():
                (os.killpg if group else os.kill)(proc.pid, signal.SIGKILL)
                break
            time.sleep(pause)
    finally:
        if proc.poll() is None:
            proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
