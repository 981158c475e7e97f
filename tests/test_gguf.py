"""GGUF models as input (pruner_zero/gguf.py): a tiny LLaMA written as a GGUF file here with the
`gguf` package (some tensors quantized to Q8_0), loaded, cached by content and recorded."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import REPO, TEXT, run_main

gguf = pytest.importorskip("gguf", reason="the gguf package is not installed "
                                          "(pip install 'pruner-zero[gguf]')")

from pruner_zero.errors import ModelError  # noqa: E402
from pruner_zero.gguf import SOURCE_JSON, checkpoint_for, find_gguf, read_header  # noqa: E402
from pruner_zero.workbench import Protocol, Workbench  # noqa: E402

HEADS, KV_HEADS = 4, 2
QUANTIZED = ("ffn_gate", "ffn_up", "ffn_down")  # stored as Q8_0: the model is their grid's values


def _byte_level_vocab() -> tuple[list[str], list[str]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    return alphabet + ["th", "the", "<|endoftext|>"], ["t h", "th e"]


def _permute(w, n_head: int):
    """llama.cpp's layout of q/k rows (transformers undoes it when it reads the file)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_tiny_gguf(path: Path, seed: int = 0, quantize: bool = True):
    """A 2-layer GQA LLaMA with a byte-level BPE vocabulary, as llama.cpp would write it; returns
    the Hugging Face model holding exactly the weights the file stores (quantized ones dequantized)."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize as q8
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, merges = _byte_level_vocab()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                      max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
                      tie_word_embeddings=False, bos_token_id=len(tokens) - 1,
                      eos_token_id=len(tokens) - 1)
    model = LlamaForCausalLM(cfg).eval()
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny test llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(cfg.hidden_size // HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quantize else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    w.add_token_merges(merges)
    w.add_bos_token_id(len(tokens) - 1)
    w.add_eos_token_id(len(tokens) - 1)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
             "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg.num_hidden_layers):
        for hf, gg in parts.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    stored = {}
    for hf, gg in names.items():
        value = sd[hf]
        if gg.endswith("attn_q.weight"):
            value = _permute(value, HEADS)
        elif gg.endswith("attn_k.weight"):
            value = _permute(value, KV_HEADS)
        if quantize and any(f".{q}." in gg for q in QUANTIZED):
            data = q8(value, Q.Q8_0)
            w.add_tensor(gg, data, raw_dtype=Q.Q8_0)
            stored[hf] = torch.from_numpy(dequantize(data, Q.Q8_0).copy())
        else:
            w.add_tensor(gg, value)
            stored[hf] = torch.from_numpy(sd[hf].copy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    model.load_state_dict(stored)
    return model


@pytest.fixture(scope="module")
def gguf_assets(tmp_path_factory):
    """tiny.gguf, the model it stores, and data (each test converts into a cache of its own)."""
    root = tmp_path_factory.mktemp("gguf")
    model = write_tiny_gguf(root / "tiny.gguf")
    data = root / "data"
    data.mkdir()
    for split, text in (("train", TEXT), ("valid", TEXT[len(TEXT) // 4:]), ("test", TEXT[: len(TEXT) // 2])):
        (data / f"{split}.txt").write_text(text)
    return root, model


def _bench(root: Path, cache: Path | None, logs: list[str] | None = None, **kw) -> Workbench:
    return Workbench(Protocol(model=str(root / "tiny.gguf"), data_dir=str(root / "data"),
                              nsamples=2, seqlen=16, device="cpu", **kw),
                     cache_dir=cache, progress=False, log=(logs.append if logs is not None else print))


def test_a_gguf_loads_as_the_weights_it_stores_and_its_source_is_recorded(gguf_assets, tmp_path):
    root, expected = gguf_assets
    logs: list[str] = []
    bench = _bench(root, tmp_path / "cache", logs)
    ids = torch.tensor([[5, 80, 100, 7, 250, 3]])
    with torch.no_grad():
        assert torch.allclose(bench.model(ids).logits, expected(ids).logits, atol=1e-5)
    q = bench.model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(q, expected.model.layers[0].mlp.up_proj.weight)  # the Q8_0 grid's values
    assert len(bench.linears) == 14
    record = bench.source_record()["model_source"]
    assert record["quantization"] == "MOSTLY_Q8_0"
    assert record["tensor_types"] == {"F32": 15, "Q8_0": 6}  # 2 x 3 ffn weights quantized
    assert record["architecture"] == "llama"
    assert record["file"] == str((root / "tiny.gguf").resolve())
    assert bench.protocol.model == str((root / "tiny.gguf").resolve())
    assert any("converting tiny.gguf" in line for line in logs)
    # the tokenizer came from the file's vocabulary: byte-level BPE with its merges
    assert bench.tokenizer("the")["input_ids"] == [len(_byte_level_vocab()[0]) - 2]


def test_the_second_load_uses_the_cached_checkpoint_and_new_content_converts_again(gguf_assets, tmp_path):
    root, _ = gguf_assets
    cache = tmp_path / "cache"
    first: list[str] = []
    _bench(root, cache, first)
    second: list[str] = []
    b2 = _bench(root, cache, second)
    assert any("converting" in line for line in first)
    assert not any("converting" in line for line in second)
    converted = list((cache / "gguf").iterdir())
    assert len(converted) == 1 and (converted[0] / SOURCE_JSON).is_file()
    # other content under the same name: keyed by content, so converted anew beside the first
    other = tmp_path / "other"
    other.mkdir()
    (other / "data").symlink_to(root / "data")
    write_tiny_gguf(other / "tiny.gguf", seed=1)
    third: list[str] = []
    b3 = _bench(other, cache, third)
    assert any("converting" in line for line in third)
    assert len(list((cache / "gguf").iterdir())) == 2
    assert not torch.equal(b2.model.model.layers[0].mlp.up_proj.weight,
                           b3.model.model.layers[0].mlp.up_proj.weight)


def test_without_a_cache_the_conversion_is_not_kept(gguf_assets, tmp_path, monkeypatch):
    import tempfile

    root, _ = gguf_assets
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    logs: list[str] = []
    bench = _bench(root, None, logs)
    converted = [line for line in logs if line.startswith("converting tiny.gguf")]
    assert len(converted) == 1 and f" in {tmp_path}/pruner-zero-gguf-" in converted[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pruner-zero-gguf-")]
    assert bench.source_record()["model_source"]["checkpoint"] is None  # nothing left to name
    # a file that fails to convert leaves no scratch directory either
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelError):
        Workbench(Protocol(model=str(tmp_path / "bad" / "x.gguf"), device="cpu"), cache_dir=None,
                  progress=False, log=lambda m: None)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("pruner-zero-gguf-")]


def test_a_directory_holding_one_gguf_is_that_model_and_two_are_refused(gguf_assets, tmp_path):
    root, _ = gguf_assets
    assert find_gguf(str(root)) == (root / "tiny.gguf").resolve()
    assert find_gguf(str(REPO / "pyproject.toml")) is None  # a file of another kind: not ours
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    (tmp_path / "b.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match="holds 2 GGUF files"):
        find_gguf(str(tmp_path))


@pytest.mark.parametrize("damage", ["truncated", "not_gguf", "empty"])
def test_a_damaged_gguf_is_one_error_line(gguf_assets, tmp_path, capsys, damage):
    root, _ = gguf_assets
    data = (root / "tiny.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"truncated": data[: len(data) // 3], "not_gguf": b"PK\x03\x04" + data[4:],
                     "empty": b""}[damage])
    with pytest.raises(ModelError, match="GGUF"):
        read_header(bad)
    code, out, err = run_main(capsys, "prune", "--model", str(bad), "--data-dir", str(root / "data"),
                              "--metric", "wanda", "--nsamples", "2", "--seqlen", "16",
                              "--device", "cpu", "--quiet", "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "bad.gguf" in err
    assert not (tmp_path / "c" / "gguf").exists() or not any((tmp_path / "c" / "gguf").iterdir())


def test_an_architecture_transformers_cannot_read_is_one_error(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "no-such-arch")
    w.add_tensor("x.weight", torch.ones(4, 4).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match="odd.gguf"):
        checkpoint_for(tmp_path / "odd.gguf", tmp_path / "cache", log=lambda m: None)
    assert not any((tmp_path / "cache" / "gguf").iterdir())  # nothing half-made is left


def test_prune_on_a_gguf_records_its_source_in_the_report_and_the_saved_model(gguf_assets, tmp_path, capsys):
    root, _ = gguf_assets
    code, out, err = run_main(
        capsys, "prune", "--model", str(root / "tiny.gguf"), "--data-dir", str(root / "data"),
        "--metric", "wanda", "--sparsity", "0.5", "--nsamples", "2", "--seqlen", "16",
        "--device", "cpu", "--quiet", "--cache-dir", str(tmp_path / "cache"),
        "--report", str(tmp_path / "r.json"), "--save", str(tmp_path / "pruned"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model_source"]["quantization"] == "MOSTLY_Q8_0"
    assert report["protocol"]["model"] == str((root / "tiny.gguf").resolve())
    how = json.loads((tmp_path / "pruned" / "pruning.json").read_text())
    assert how["model_source"]["sha256"] == report["model_source"]["sha256"]
    # the saved model is an ordinary checkpoint, evaluated like any other
    code, out, err = run_main(capsys, "eval", "--model", str(tmp_path / "pruned"),
                              "--data-dir", str(root / "data"), "--seqlen", "16", "--device", "cpu",
                              "--quiet")
    assert code == 0 and float(out) == pytest.approx(report["ppl"], rel=1e-5)


def test_convert_prints_the_path_to_give_model(gguf_assets, tmp_path, capsys):
    root, _ = gguf_assets
    code, out, err = run_main(capsys, "convert", str(root), "--cache-dir", str(tmp_path / "c"))
    assert code == 0 and out.strip() == str((root / "tiny.gguf").resolve())
    assert "checkpoint: " + str(tmp_path / "c" / "gguf") in err
    code, out, err = run_main(capsys, "convert", str(REPO / "pyproject.toml"))
    assert code == 2 and err.startswith("error: ") and "not a .gguf" in err


REAL_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SHARED_WIKI = REPO.parent / "shared" / "data" / "wikitext-2"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_MODEL.is_file() or not (SHARED_WIKI / "test.txt").is_file(),
                    reason=f"the real model is absent ({REAL_MODEL}: run `make real-model`) "
                           f"or WikiText-2 is ({SHARED_WIKI})")
def test_the_real_model_prunes_end_to_end_and_its_outliers_sink_magnitude(tmp_path, capsys):
    """SmolLM2-135M from `make real-model`: a prune from the .gguf through the cache, its source
    recorded; on a real LLaMA magnitude pruning collapses where an activation-aware metric does
    not (the outlier features the 5M models lack)."""
    cache = tmp_path / "cache"
    common = ["--model", str(REAL_MODEL), "--data-dir", str(SHARED_WIKI), "--calib-split", "valid",
              "--nsamples", "8", "--seqlen", "128", "--eval-windows", "8", "--device", "cpu",
              "--sparsity", "0.5", "--quiet", "--cache-dir", str(cache)]
    code, out, err = run_main(capsys, "prune", *common, "--metric", "wanda",
                              "--report", str(tmp_path / "wanda.json"))
    assert code == 0, err
    assert "converting SmolLM2-135M-Instruct.Q4_1.gguf" in err
    wanda = json.loads((tmp_path / "wanda.json").read_text())
    assert wanda["model_source"]["quantization"] == "MOSTLY_Q4_1"
    assert wanda["windows"] == 8 and abs(wanda["sparsity"] - 0.5) < 1e-3
    code, out, err = run_main(capsys, "prune", *common, "--metric", "magnitude", "--no-dense-ppl")
    assert code == 0, err
    assert "converting" not in err  # the second load reads the cached checkpoint
    magnitude = json.loads(out)
    assert wanda["ppl_dense"] < wanda["ppl"] < magnitude["ppl"] / 2
