"""Verification cost t(q, L): seconds of one forward pass of q tokens over a cache of L tokens.

The cost-aware policy sizes every draft by this curve, so its shape decides what speculation can
win on a machine. This script measures it for the default model and for random-weight models of
common shapes (a pass costs the same whatever the weights' values, so no checkpoint is needed to
learn what verification costs on a 1B or 8B model), and writes a table and, per model, a cost
profile that ``sam-decoding bench --reference-profile`` can model speed-ups under.

Run (on a GPU, as for the README's figures):
    python bench/cost_curve.py --device cuda --dtype bfloat16 --models smollm2,llama-1b,llama-8b \\
        --out bench/results/gpu
Each cell is the median of --repeats timed passes after two warm-up passes; the spread
(quartiles) is kept in the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from sam_decoding.kv_cache import cache_arguments, truncate_cache
from sam_decoding.policy import CostProfile

Q_VALUES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
CACHE_LENGTHS = (512, 2048)

#: Random-weight shapes (Llama-3.2-1B and Llama-3.1-8B); the default model is loaded for real.
RANDOM_SHAPES: dict[str, dict[str, int]] = {
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256),
    "llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256),
    # A tiny shape, so the script itself can be tried on a CPU in seconds.
    "llama-tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=1000),
}


def load(name: str, device: torch.device, dtype: torch.dtype) -> Any:
    if name == "smollm2":
        from sam_decoding.models import load_model

        return load_model(None, dtype=dtype).to(device).eval()
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**RANDOM_SHAPES[name], max_position_embeddings=8192, tie_word_embeddings=False)
    config._attn_implementation = "sdpa"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            return LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(previous)


def measure(model: Any, device: torch.device, repeats: int) -> dict[int, dict[int, list[float]]]:
    """``{L: {q: [seconds of each timed pass]}}``."""
    from transformers import DynamicCache

    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)

    def tokens(count: int) -> torch.Tensor:
        return torch.randint(0, vocab, (1, count), generator=generator).to(device)

    times: dict[int, dict[int, list[float]]] = {}
    with torch.inference_mode():
        for length in CACHE_LENGTHS:
            cache = DynamicCache(config=model.config)
            kwargs = cache_arguments(model, cache)
            model(input_ids=tokens(length), use_cache=True, **kwargs)
            times[length] = {}
            for q in Q_VALUES:
                positions = torch.arange(length, length + q, device=device).unsqueeze(0)
                samples = []
                for attempt in range(repeats + 2):
                    ids = tokens(q)
                    synchronize()
                    tick = time.perf_counter()
                    model(input_ids=ids, position_ids=positions, use_cache=True, **kwargs)
                    synchronize()
                    if attempt >= 2:
                        samples.append(time.perf_counter() - tick)
                    truncate_cache(cache, length)
                times[length][q] = samples
    return times


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    low, median, high = statistics.quantiles(samples, n=4) if len(samples) > 1 else (samples[0],) * 3
    return low, median, high


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Verification cost t(q, L) / t(1, L)\n\n{results['machine']}; dtype {results['dtype']}; "
             f"median of {results['repeats']} passes per cell.\n\n`{results['command']}`\n"]
    for name, model in results["models"].items():
        for length, cells in model["times"].items():
            t1 = cells["1"]["median"]
            lines.append(f"\n**{name}**, cache {length} tokens, t(1) = {t1 * 1000:.2f} ms\n")
            lines.append("| q | " + " | ".join(cells) + " |")
            lines.append("|---|" + "---:|" * len(cells))
            lines.append("| t(q)/t(1) | " + " | ".join(f"{cell['median'] / t1:.2f}" for cell in cells.values()) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--models", default="smollm2", help=f"comma-separated: smollm2, {', '.join(RANDOM_SHAPES)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cost_curve"))
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    results: dict[str, Any] = {
        "machine": f"{machine}, torch {torch.__version__}",
        "dtype": args.dtype,
        "repeats": args.repeats,
        "command": "python bench/cost_curve.py " + " ".join(
            f"--{key.replace('_', '-')} {value}" for key, value in vars(args).items()
        ),
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models.split(","):
        model = load(name, device, dtype)
        times = measure(model, device, args.repeats)
        profile = CostProfile(f"{name} {args.dtype} on {machine}")
        cells: dict[str, Any] = {}
        for length, by_q in times.items():
            cells[str(length)] = {}
            for q, samples in by_q.items():
                low, median, high = quartiles(samples)
                cells[str(length)][str(q)] = {"median": median, "quartiles": [low, high]}
                for seconds in samples:
                    profile.observe(q, length, seconds, force=True)
        results["models"][name] = {"parameters": sum(p.numel() for p in model.parameters()), "times": cells}
        profile.save(args.out / f"profile-{name}-{args.dtype}.json")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        stem = args.out / f"cost_curve-{args.dtype}"
        stem.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        stem.with_suffix(".md").write_text(markdown(results))
        print(markdown({**results, "models": {name: results["models"][name]}}), flush=True)


if __name__ == "__main__":
    main()
