"""Does a vLLM CPU step cost what its total tokens say, or also depend on how many rows carry drafts?

A ``custom_class`` proposer hands out drafts of fixed shapes, cycling through them step by step:
shape ``RxN`` gives N draft tokens to each of the first R rows (the row's last token repeated, so
almost every draft is rejected and every row advances one token a step). The time from one
``propose`` call to the next is the cost of the step that verified that call's drafts; medians per
shape compare, e.g., 32 rows x 1 token against 4 rows x 8 tokens (both 32 draft tokens).

Run (vLLM environment): python bench/experiments/vllm_step_cost.py --rows 32 --shapes 0x0,32x1,4x8,16x2,32x2,8x8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

SHAPES_ENV = "SAM_STEP_COST_SHAPES"
LOG_ENV = "SAM_STEP_COST_LOG"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"0x0,32x1"`` -> ``[(0, 0), (32, 1)]``."""
    shapes = []
    for item in text.split(","):
        rows, _, tokens = item.partition("x")
        shapes.append((int(rows), int(tokens)))
    return shapes


class ShapedProposer:
    """Drafts shapes in turn and logs each step's rows, shape and the seconds until the next call."""

    def __init__(self, vllm_config: Any, *args: Any, **kwargs: Any) -> None:
        self.shapes = parse_shapes(os.environ[SHAPES_ENV])
        self.log = open(os.environ[LOG_ENV], "a", buffering=1)  # noqa: SIM115 - lives as long as the engine
        self.step = 0
        self.last: tuple[float, int, tuple[int, int]] | None = None

    def load_model(self, *args: Any, **kwargs: Any) -> None:
        pass

    def propose(self, sampled_token_ids: list[list[int]], *args: Any, **kwargs: Any) -> list[list[int]]:
        now = time.perf_counter()
        decoding = [row for row, sampled in enumerate(sampled_token_ids) if sampled]
        if self.last is not None:
            started, rows, shape = self.last
            self.log.write(json.dumps({"rows": rows, "shape": shape, "seconds": now - started, "clean": len(decoding) == rows}) + "\n")
        shape = self.shapes[self.step % len(self.shapes)]
        self.step += 1
        drafts: list[list[int]] = [[] for _ in sampled_token_ids]
        for row in decoding[: shape[0]]:
            drafts[row] = [sampled_token_ids[row][-1]] * shape[1]
        self.last = (now, len(decoding), shape)
        return drafts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=32, help="requests served together")
    parser.add_argument("--shapes", default="0x0,32x1,4x8,16x2,32x2,8x8", help="RxN: N draft tokens to each of R rows")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=1, help="groups of --rows requests, one after another")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vllm_step_cost"))
    args = parser.parse_args()
    from vllm import LLM, SamplingParams

    from sam_decoding.benchmark.suites import load_spec_bench_mini
    from sam_decoding.models import default_model_dir

    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"steps-{args.rows}.jsonl"
    log.unlink(missing_ok=True)
    os.environ.update({SHAPES_ENV: args.shapes, LOG_ENV: str(log.resolve()), "VLLM_CPU_KVCACHE_SPACE": "1"})
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    speculative = {"method": "custom_class", "model": "vllm_step_cost.ShapedProposer", "num_speculative_tokens": 8}
    llm = LLM(model=str(default_model_dir()), dtype="float32", max_model_len=2048, seed=0, enforce_eager=True,
              max_num_seqs=args.rows, speculative_config=speculative)
    questions = [q.prompt for q in load_spec_bench_mini().interleaved().questions]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    for round_index in range(args.rounds):
        group = questions[round_index * args.rows : (round_index + 1) * args.rows]
        llm.generate([{"prompt": q} for q in group], params, use_tqdm=False)
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    summary = {}
    for shape in parse_shapes(args.shapes):
        times = [s["seconds"] for s in steps if s["clean"] and s["rows"] == args.rows and tuple(s["shape"]) == shape]
        if times:
            summary[f"{shape[0]}x{shape[1]}"] = {"steps": len(times), "median_ms": round(1000 * statistics.median(times), 1),
                                                "p25_ms": round(1000 * statistics.quantiles(times, n=4)[0], 1),
                                                "p75_ms": round(1000 * statistics.quantiles(times, n=4)[2], 1)}
    (args.out / f"summary-{args.rows}.json").write_text(json.dumps({"command": " ".join(sys.argv), "load": os.getloadavg(), "shapes": summary}, indent=1))
    for name, row in summary.items():
        print(f"{args.rows} rows, {name}: {row}")


if __name__ == "__main__":
    main()
