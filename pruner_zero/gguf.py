"""GGUF files as models: dequantized once into a Hugging Face checkpoint, cached by content.

transformers reads a GGUF file (``from_pretrained(dir, gguf_file=...)``, with the ``gguf``
package) and dequantizes its weights: the model is then the values of the file's quantization
grid, in float32. That conversion costs seconds to minutes (the tokenizer is rebuilt from the
file's vocabulary), so it runs once per file content and the checkpoint is kept under
``<cache>/gguf/<stem>-<sha256 prefix>/``, with ``gguf_source.json`` saying what it came from.
A prune's report, ``pruning.json`` and ``eval --report`` record that source
(``GgufSource.as_dict``)."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from .errors import ModelError
from .files import atomic_write_json, publish_dir, read_json, user_path

SUFFIX = ".gguf"
SOURCE_JSON = "gguf_source.json"
CACHE_SUBDIR = "gguf"
MAGIC = b"GGUF"


@dataclass(frozen=True)
class GgufSource:
    """Where a dequantized checkpoint came from: the file, its content and its quantization."""

    file: str  # absolute path of the .gguf
    sha256: str
    size: int
    architecture: str
    quantization: str  # the file's declared type (general.file_type), e.g. MOSTLY_Q4_1
    tensor_types: dict[str, int]  # how many tensors of each stored type (norms stay F32)
    checkpoint: str | None  # the cached Hugging Face directory loaded (None: a scratch one, gone)

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return (f"{Path(self.file).name} ({self.quantization}, dequantized to float32: the "
                "weights are the values of its quantization grid)")


def find_gguf(name_or_path: str) -> Path | None:
    """The GGUF file a ``--model`` names (a .gguf file, or a directory holding exactly one and no
    config.json), else None: a Hugging Face directory or a hub id."""
    path = user_path(name_or_path)
    if path.is_file():
        return path.resolve() if path.suffix.lower() == SUFFIX else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix.lower() == SUFFIX and p.is_file())
    if len(found) > 1:
        raise ModelError(f"{name_or_path} holds {len(found)} GGUF files "
                         f"({', '.join(p.name for p in found[:4])}); give one file as --model")
    return found[0].resolve() if found else None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def read_header(path: Path) -> tuple[str, str, dict[str, int]]:
    """(architecture, declared quantization, tensor type counts) of a GGUF file; a file that is
    not one, or a damaged one, is one ModelError naming it."""
    bad = f"{path} is not a readable GGUF file"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != MAGIC:
        raise ModelError(f"{bad}: it does not start with the GGUF magic bytes (got {magic!r})")
    try:
        import gguf
    except ImportError:
        raise ModelError("GGUF models need the gguf package: pip install 'pruner-zero[gguf]'") from None
    try:
        reader = gguf.GGUFReader(str(path))
        arch_field = reader.fields.get("general.architecture")
        if arch_field is None:
            raise ValueError("no general.architecture key")
        architecture = bytes(arch_field.parts[arch_field.data[0]]).decode("utf-8")
        types = Counter(t.tensor_type.name for t in reader.tensors)
        if not types:
            raise ModelError(f"{bad}: it holds no tensors")
        ftype = reader.fields.get("general.file_type")
        if ftype is not None:
            code = int(ftype.parts[ftype.data[0]][0])
            try:
                quantization = gguf.LlamaFileType(code).name
            except ValueError:
                quantization = f"file_type {code}"
        else:  # undeclared: the most common stored type
            quantization = types.most_common(1)[0][0]
    except ModelError:
        raise
    except Exception as exc:  # numpy, struct and the reader's own errors on a damaged file
        raise ModelError(f"{bad} (damaged or truncated?): {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    return architecture, quantization, dict(sorted(types.items()))


def checkpoint_for(gguf_path: Path, cache_dir: Path, log: Callable[[str], None] = print
                   ) -> GgufSource:
    """The cached Hugging Face checkpoint of ``gguf_path`` (converted now if there is none for
    this content), and what it came from."""
    architecture, quantization, types = read_header(gguf_path)
    digest = file_sha256(gguf_path)
    dest = Path(cache_dir) / CACHE_SUBDIR / f"{gguf_path.stem}-{digest[:16]}"
    source = GgufSource(file=str(gguf_path), sha256=digest, size=gguf_path.stat().st_size,
                        architecture=architecture, quantization=quantization,
                        tensor_types=types, checkpoint=str(dest))
    if _complete(dest, digest):
        return source
    if dest.exists():  # a checkpoint of other content under this name, or damaged: redo it
        import shutil

        log(f"warning: {dest} is not a complete conversion of {gguf_path.name}; converting again")
        shutil.rmtree(dest)
    log(f"converting {gguf_path.name} ({quantization}) to a Hugging Face checkpoint in {dest} "
        "(once per file)")
    try:
        publish_dir(lambda tmp: _convert(gguf_path, tmp, source), dest)
    except OSError:
        if not _complete(dest, digest):  # another process published the same conversion first
            raise
    return source


def _complete(dest: Path, digest: str) -> bool:
    if not (dest / SOURCE_JSON).is_file():
        return False
    try:
        stored = read_json(dest / SOURCE_JSON, "GGUF source record", ModelError)
    except ModelError:
        return False
    return isinstance(stored, dict) and stored.get("sha256") == digest


def _convert(gguf_path: Path, out: Path, source: GgufSource) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    except Exception as exc:
        raise ModelError(f"cannot read the tokenizer of {gguf_path}: {_line(exc)}") from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    except Exception as exc:
        raise ModelError(f"cannot load the GGUF model {gguf_path}: {_line(exc)}") from exc
    # the weights are plain float32 now: save them as an ordinary checkpoint
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.use_cache = True
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    atomic_write_json(out / SOURCE_JSON, source.as_dict())


def _line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

