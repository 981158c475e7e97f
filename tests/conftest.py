"""Shared fixtures: a tiny random LLaMA built in code, and the real assets in ../shared."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

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


def scores_of(tree, W, G=None, X=None, dtype=torch.float32):
    """score_metric with the three base terminals given by position (None: absent)."""
    from pruner_zero.metric.tree import score_metric

    return score_metric(tree, {k: v for k, v in (("W", W), ("G", G), ("X", X)) if v is not None},
                        dtype)


def masks_of(engine, tree) -> dict[str, torch.Tensor]:
    """The masks a metric gives, read off the pruned weights (the random test models have no
    exact zeros of their own); the engine restores the dense model afterwards."""
    engine.prune(tree)
    try:
        return {n: (m.weight == 0).clone() for n, m in engine.linears.items()}
    finally:
        engine.restore()


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
