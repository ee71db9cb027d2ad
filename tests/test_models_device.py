"""Where and in what precision models load: ``load_model``'s device/dtype resolution and the CLI's --device/--dtype.

CUDA's presence is simulated (``torch.cuda.is_available`` patched) only to check the resolution
logic; nothing here runs a CUDA kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sam_decoding.models as models
from sam_decoding.cli import main
from sam_decoding.cli.errors import CliError
from sam_decoding.models import load_model, resolve_device, resolve_dtype


@pytest.fixture
def cuda_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend this machine has two CUDA devices (for the resolution logic only)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def cuda_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_is_cuda_in_bfloat16_where_cuda_exists(cuda_present) -> None:
    for auto in (None, "auto"):
        device = resolve_device(auto)
        assert device == torch.device("cuda")
        assert resolve_dtype(auto, device) is torch.bfloat16
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_auto_is_cpu_in_float32_without_cuda(cuda_absent) -> None:
    device = resolve_device("auto")
    assert device == torch.device("cpu")
    assert resolve_dtype("auto", device) is torch.float32
    assert resolve_dtype(None, None) is torch.float32


@pytest.mark.parametrize(
    ("given", "expected"),
    [("cpu", torch.device("cpu")), (torch.device("cpu"), torch.device("cpu"))],
)
def test_explicit_devices(given, expected) -> None:
    assert resolve_device(given) == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("float16", torch.float16),
     (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)],
)
def test_explicit_dtypes_override_auto(given, expected, cuda_present) -> None:
    assert resolve_dtype(given, torch.device("cuda")) is expected
    assert resolve_dtype(given, torch.device("cpu")) is expected


@pytest.mark.parametrize(
    ("device", "message"),
    [("warp9", "not a torch device"), ("cuda", "CUDA is not available"), ("cuda:1", "CUDA is not available"),
     (3.5, "not a torch device"), ("meta", "unsupported device type")],
)
def test_bad_devices_fail_in_one_line(device, message, cuda_absent) -> None:
    with pytest.raises(ValueError, match=message) as error:
        resolve_device(device)
    assert "\n" not in str(error.value)


def test_a_missing_cuda_index_is_named(cuda_present) -> None:
    with pytest.raises(ValueError, match=r"has 2 CUDA device\(s\)"):
        resolve_device("cuda:7")


@pytest.mark.parametrize("dtype", ["int8", "fp16", torch.int8, torch.float64, 16])
def test_bad_dtypes_fail_in_one_line(dtype) -> None:
    with pytest.raises(ValueError, match="use auto, float32, bfloat16, float16") as error:
        resolve_dtype(dtype, torch.device("cpu"))
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random llama with the default model's tokenizer, saved to disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from sam_decoding.models import load_tokenizer

    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)
    return directory


def test_load_model_places_the_weights(tiny_model_dir) -> None:
    model = load_model(tiny_model_dir, device="cpu", dtype="bfloat16")
    parameter = next(model.parameters())
    assert parameter.dtype is torch.bfloat16 and parameter.device.type == "cpu"
    assert not model.training
    if not torch.cuda.is_available():
        default = next(load_model(tiny_model_dir).parameters())
        assert default.dtype is torch.float32 and default.device.type == "cpu"


def test_load_model_refuses_cuda_where_absent(tiny_model_dir, cuda_absent) -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_model(tiny_model_dir, device="cuda")


def _commands(root: Path, model: Path) -> dict[str, list[str]]:
    prompts = root / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Say hi."}) + "\n", encoding="utf-8")
    return {
        "generate": ["generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "2"],
        "bench": ["bench", "--model", model, "--methods", "vanilla", "--limit", "1"],
        "distill": ["distill", prompts, "-o", root / "answers.jsonl", "--model", model],
        "train-heads": ["train-heads", prompts, "-o", root / "heads.safetensors", "--model", model],
        "profile": ["profile", "--model", model, "--budget", "0.3", "--out", root / "profile.json"],
    }


@pytest.mark.parametrize("command", ["generate", "bench", "distill", "train-heads", "profile"])
@pytest.mark.parametrize(
    ("flags", "cuda", "expected"),
    [
        ([], True, (torch.device("cuda"), torch.bfloat16)),
        ([], False, (torch.device("cpu"), torch.float32)),
        (["--device", "cuda:1", "--dtype", "float16"], True, (torch.device("cuda:1"), torch.float16)),
        (["--device", "cpu", "--dtype", "bfloat16"], True, (torch.device("cpu"), torch.bfloat16)),
    ],
    ids=["auto-cuda", "auto-cpu", "cuda1-fp16", "cpu-bf16"],
)
def test_every_command_hands_its_flags_to_load_model(
    command, flags, cuda, expected, tmp_path, tiny_model_dir, monkeypatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if cuda else 0)
    seen = []

    def spy(name_or_path, device=None, dtype=None):
        seen.append((resolve_device(device), resolve_dtype(dtype, resolve_device(device))))
        raise CliError("stopped once the model would load")

    monkeypatch.setattr(models, "load_model", spy)
    argv = [str(arg) for arg in _commands(tmp_path, tiny_model_dir)[command] + flags]
    assert main(argv) != 0
    assert seen == [expected]


@pytest.mark.parametrize("command", ["generate", "bench", "distill", "train-heads", "profile"])
@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--device", "cuda"], "--device 'cuda': CUDA is not available"), (["--device", "warp9"], "not a torch device")],
)
def test_every_command_refuses_a_bad_device_in_one_line(command, flags, message, tmp_path, tiny_model_dir, capsys, cuda_absent) -> None:
    argv = [str(arg) for arg in _commands(tmp_path, tiny_model_dir)[command] + flags]
    assert main(argv) != 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines


def test_generate_runs_on_the_requested_dtype(tmp_path, tiny_model_dir, capsys) -> None:
    # The real thing end to end: the flags load the model in bfloat16 on the CPU and it generates.
    argv = [str(arg) for arg in _commands(tmp_path, tiny_model_dir)["generate"]] + ["--device", "cpu", "--dtype", "bfloat16", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["stats"]["new_tokens"] == 2
