"""model.py: loading a checkpoint (its dtype, an unsupported architecture) and finding the
decoder's prunable linears."""
import pytest
import torch

from pruner_zero.model import prunable_linears


def test_unsupported_model_names_what_it_found(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path / "bert")
    from pruner_zero.errors import ModelError
    from pruner_zero.model import load_model

    with pytest.raises(ModelError) as info:
        load_model(str(tmp_path / "bert"), device="cpu")
    assert "bert" in str(info.value).lower()


def test_dtype_auto_keeps_the_checkpoints_own_dtype(tmp_path):
    from conftest import tiny_llama, word_tokenizer
    from pruner_zero.model import load_model

    tiny_llama().to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    word_tokenizer().save_pretrained(tmp_path / "bf16")
    model, _ = load_model(str(tmp_path / "bf16"), device="cpu", dtype="auto")
    assert next(model.parameters()).dtype == torch.bfloat16
    model, _ = load_model(str(tmp_path / "bf16"), device="cpu", dtype="float32")
    assert next(model.parameters()).dtype == torch.float32


def test_prunable_linears_are_decoder_linears_only(tiny_model):
    names = list(prunable_linears(tiny_model))
    assert len(names) == 2 * 7  # q k v o gate up down per block
    assert all(n.startswith("model.layers.") for n in names)
    assert not any("lm_head" in n or "embed" in n for n in names)


@pytest.mark.parametrize("change, says", [(+1, "missing from the weight files"),
                                          (-1, "in the weight files but not in the model")])
def test_a_config_that_disagrees_with_the_weights_is_refused(tmp_path, change, says):
    """Issue #22: num_hidden_layers one too many loaded a random layer (another dense ppl every
    run, and --save wrote it); one too few dropped a layer. Both exit 0 before."""
    import json

    from conftest import tiny_llama, word_tokenizer
    from pruner_zero.errors import ModelError
    from pruner_zero.model import load_model

    model = tiny_llama()
    model.save_pretrained(tmp_path / "m")
    word_tokenizer().save_pretrained(tmp_path / "m")
    load_model(str(tmp_path / "m"), device="cpu")  # as saved: loads
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["num_hidden_layers"] += change
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=f"{says}.*model.layers.*config.json matches"):
        load_model(str(tmp_path / "m"), device="cpu")
