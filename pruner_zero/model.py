"""Load and save Hugging Face causal LMs; find the linears of their decoder blocks."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError, ModelError, describe
from .files import atomic_write_json, looks_like_path, publish_dir, read_json, user_path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# Where each supported family keeps its decoder blocks, tried in order.
_LAYER_PATHS = ("model.layers", "model.decoder.layers")


def resolve_device(device: str) -> torch.device:
    """`auto` picks CUDA when present, because pruning a real LLM on CPU is impractically slow."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but no CUDA device is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda[:N], got {device!r}")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype | str:
    """`auto` keeps the checkpoint's own dtype (a bfloat16 model stays bfloat16), as Hugging
    Face's `auto` does; statistics are float32 whatever the model's dtype."""
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def load_model(name_or_path: str, device: str = "auto", dtype: str = "auto",
               device_map: str | None = None, revision: str | None = None,
               trust_remote_code: bool = False):
    """Return (model, tokenizer) in eval mode; every failure becomes one ModelError line.
    `revision` (a hub branch, tag or commit) pins what a hub id loads; `trust_remote_code` runs
    the model repository's own Python code, which some architectures need."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = user_path(name_or_path)
    if not path.exists() and looks_like_path(name_or_path, hub_ids=True):
        raise ModelError(f"model path not found: {name_or_path}")
    if path.exists() and not (path / "config.json").is_file():
        raise ModelError(f"{name_or_path} is not a Hugging Face model directory (no config.json)")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    if path.exists():
        check_model_files(path)
    else:
        check_hub_reachable(name_or_path, revision)
    source = str(path) if path.exists() else name_or_path
    hub = {"revision": revision} if revision else {}
    hub["trust_remote_code"] = trust_remote_code
    kwargs = {"dtype": torch_dtype, **hub}
    if device_map:
        kwargs["device_map"] = device_map
    # Whatever a loader raises on a user's files (the libraries use many exception types, some
    # of them from Rust) is one line naming the model and the part that failed.
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    except Exception as exc:
        raise ModelError(f"cannot load the tokenizer of {name_or_path!r}: {describe(exc)}") from exc
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its table of unloaded weights: our one line says it
    try:
        model, info = AutoModelForCausalLM.from_pretrained(source, output_loading_info=True,
                                                           **kwargs)
    except Exception as exc:
        raise ModelError(f"cannot load model {name_or_path!r}: {describe(exc)}") from exc
    finally:
        hf_logging.set_verbosity(level)
    if not device_map:
        model.to(dev)
    model.eval()
    model.config.use_cache = False
    decoder_layers(model)  # fail now, with a clear message, on unsupported architectures
    _check_loading_info(name_or_path, info)
    return model, tokenizer


def _check_loading_info(name: str, info: dict) -> None:
    """Weights the config.json asks for but the files lack (transformers fills them at random)
    or holds but the config has no place for: a model that is not the one on disk, refused."""
    for kind, what in (("missing_keys", "missing from the weight files (the config.json asks "
                                        "for them; they would be random)"),
                       ("unexpected_keys", "in the weight files but not in the model the "
                                           "config.json describes"),
                       ("mismatched_keys", "of another shape than the config.json describes")):
        keys = sorted(str(k[0] if isinstance(k, tuple) else k) for k in info.get(kind) or ())
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            raise ModelError(f"model {name!r}: {len(keys)} weight(s) {what}: {shown}; "
                             "check that config.json matches the weights")


HUB_HOST = ("huggingface.co", 443)


def check_hub_reachable(repo_id: str, revision: str | None = None, timeout: float = 5.0) -> None:
    """A hub model that is not in the local cache needs the network: find out in seconds, not
    after the libraries' retries (about 50 s), and say what to do instead."""
    import os
    import socket

    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
            return  # cached: the loaders work offline
    except Exception:  # an id the cache cannot even look up: let the loader name the problem
        return
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelError(f"model {repo_id!r}{_at(revision)} is not in the local Hugging Face cache and "
                         "HF_HUB_OFFLINE is set; pass a local model directory")
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
    except OSError as exc:
        raise ModelError(f"model {repo_id!r}{_at(revision)} is not in the local Hugging Face cache and the hub "
                         f"({HUB_HOST[0]}) cannot be reached ({exc.strerror or exc}); pass a "
                         "local model directory, or check the network") from None


def _at(revision: str | None) -> str:
    return f" (revision {revision!r})" if revision else ""


def check_model_files(path: Path) -> None:
    """Read the small files of a local model and the headers of its weight files, so a damaged
    file is named with what is wrong with it (loaders report such damage in their own words)."""
    config = read_json(path / "config.json", "model config", ModelError)
    if not isinstance(config, dict):
        raise ModelError(f"the model config {path / 'config.json'} must be a JSON object, got "
                         f"{type(config).__name__}")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json",
                 "model.safetensors.index.json"):
        if (path / name).is_file():
            obj = read_json(path / name, "model file", ModelError)
            if not isinstance(obj, dict):
                raise ModelError(f"the model file {path / name} must be a JSON object")
    for weights in sorted(path.glob("*.safetensors")):
        check_safetensors(weights)


def check_safetensors(path: Path) -> None:
    """The safetensors layout: 8-byte header length, a JSON header, then exactly the tensor
    bytes it lists; a truncated, empty or foreign file fails here with the reason."""
    import json
    import struct

    size = path.stat().st_size
    bad = f"the weight file {path} is damaged"
    if size < 8:
        raise ModelError(f"{bad}: {size} bytes, shorter than a safetensors header")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > min(size - 8, 100_000_000):
            raise ModelError(f"{bad}: its header claims {n} bytes, the file has {size}")
        try:
            header = json.loads(fh.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ModelError(f"{bad}: its header is not valid JSON (not a safetensors file?)") from None
    if not isinstance(header, dict):
        raise ModelError(f"{bad}: its header is not a JSON object")
    data = size - 8 - n
    ends = [t.get("data_offsets", [0, 0])[1] for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict)]
    if not all(isinstance(e, int) for e in ends):
        raise ModelError(f"{bad}: its header has malformed data offsets")
    if ends and max(ends) > data:
        raise ModelError(f"{bad}: truncated ({data} bytes of tensor data, the header lists "
                         f"{max(ends)}); copy or download it again")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The list of decoder blocks: LLaMA/Mistral/Qwen2 `model.layers`, OPT `model.decoder.layers`."""
    for dotted in _LAYER_PATHS:
        obj = model
        for part in dotted.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    found = type(model).__name__
    children = ", ".join(name for name, _ in model.named_children()) or "none"
    raise ModelError(
        f"unsupported model {found}: expected a causal LM with decoder blocks at "
        f"{' or '.join(_LAYER_PATHS)} (top-level modules found: {children})")


def layers_prefix(model: nn.Module) -> str:
    """The dotted name of the decoder's block list (e.g. `model.layers`), for full linear names."""
    layers = decoder_layers(model)
    return next(name for name, mod in model.named_modules() if mod is layers)


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside a decoder block, by full module name; embeddings and lm_head are outside."""
    layers = decoder_layers(model)
    prefix = layers_prefix(model)
    found: dict[str, nn.Linear] = {}
    for i, block in enumerate(layers):
        for name, mod in block.named_modules():
            if isinstance(mod, nn.Linear):
                found[f"{prefix}.{i}.{name}"] = mod
    if not found:
        raise ModelError(f"no nn.Linear layers found in the decoder blocks of {type(model).__name__}")
    return found


def decoder_parameters(model: nn.Module) -> int:
    """Every parameter inside the decoder blocks (experts kept as 3-D tensors included)."""
    return sum(p.numel() for p in decoder_layers(model).parameters())


def linear_share(model: nn.Module, linears: dict[str, nn.Linear]) -> float:
    """The fraction of the decoder's parameters that the prunable nn.Linear weights hold: well
    below 1 for mixture-of-experts models whose experts are not nn.Linear modules."""
    return sum(m.weight.numel() for m in linears.values()) / max(decoder_parameters(model), 1)


MIN_LINEAR_SHARE = 0.9  # below it, pruning "the model" would leave much of the decoder dense


def check_linear_share(model: nn.Module, linears: dict[str, nn.Linear], allow_partial: bool,
                       log=print) -> float:
    """The share of the decoder that pruning reaches; refused below MIN_LINEAR_SHARE unless
    `allow_partial` (then a warning): a mixture-of-experts model pruned only in its attention
    would be reported as pruned while most of its weights stay dense."""
    share = linear_share(model, linears)
    if share < MIN_LINEAR_SHARE:
        message = (f"the decoder's nn.Linear weights hold {share:.1%} of its parameters (below "
                   f"{MIN_LINEAR_SHARE:.0%}): the rest (e.g. experts stored as 3-D tensors) "
                   "would not be pruned")
        if not allow_partial:
            raise ConfigError(message + "; pass --allow-partial to prune only the linears")
        log(f"warning: {message}")
    return share


def max_positions(model: nn.Module) -> int | None:
    """The longest sequence the model is configured for, if it says."""
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def input_device(model: nn.Module) -> torch.device:
    """Where token ids must go: the embedding's device (differs from others under device_map)."""
    return model.get_input_embeddings().weight.device


PRUNING_JSON = "pruning.json"


def versions() -> dict[str, str]:
    """The versions a result depends on, for the files that travel with it."""
    import importlib.metadata as md

    out = {}
    for dist in ("pruner-zero", "torch", "transformers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "unknown"
    return out


def save_pruned(model: nn.Module, tokenizer, out_dir: str | Path, how: dict | None = None) -> Path:
    """save_pretrained as safetensors, tokenizer beside it, and `pruning.json` (how the model was
    made), written into a temporary directory renamed to `out_dir` only when all are complete:
    a save that is killed half-way never leaves a directory that loads as if it were whole."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / PRUNING_JSON, how or {})

    return publish_dir(write, user_path(out_dir))
