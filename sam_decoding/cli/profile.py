"""``sam-decoding profile``: measure (or show, or forget) what a verification pass costs on this machine."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sam_decoding.cli.errors import CliError
from sam_decoding.cli.loading import add_placement_arguments

_EPILOG = """\
The profile t(q, L) is what the cost-aware policy sizes every draft by. It is measured the first
time a model is used (about 2 s) and cached under the sam-decoding cache, keyed by model, device,
dtype, torch threads, torch version and processor; every generation step refines it.

examples:
  sam-decoding profile                       # show the cached profile (measure it if there is none)
  sam-decoding profile --reset --threads 2   # forget it and measure afresh
  sam-decoding profile --out cpu.json        # also write it, e.g. for bench --cost-profile"""


def register(commands: Any) -> None:
    """Add the ``profile`` subcommand to ``commands``."""
    parser = commands.add_parser(
        "profile",
        help="measure the verification cost t(q, L) the cost-aware policy uses",
        description="Show this machine's verification cost profile for a model, measuring it if needed.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", metavar="MODEL", help="local model directory (default: SmolLM2-135M-Instruct)")
    add_placement_arguments(parser)
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--reset", action="store_true", help="delete the cached profile and measure afresh")
    parser.add_argument("--budget", type=float, default=2.0, metavar="SECONDS", help="calibration time (default: %(default)s)")
    parser.add_argument("--out", type=Path, metavar="FILE", help="also write the profile to FILE (JSON)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Show (and maybe measure, reset or write) the cost profile. Returns the exit code."""
    if args.threads is not None and args.threads < 1:
        raise CliError("--threads must be at least 1")
    if not args.budget > 0:
        raise CliError("--budget must be positive")
    import torch

    from sam_decoding.cli.loading import load_model_and_tokenizer
    from sam_decoding.policy.cost_aware import model_profile, profile_path, reset_profile

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    model, _ = load_model_and_tokenizer(args.model, dtype=args.dtype, device=args.device)
    if args.reset:
        reset_profile(model)
    profile, spent = model_profile(model, args.budget)
    if args.out is not None:
        profile.save(args.out)
    table = profile.table()
    if args.json:
        print(json.dumps(table))
        return 0
    path = profile_path(model)
    origin = f"measured now in {spent:.1f} s" if spent else "from the cache"
    print(f"verification cost profile ({origin}; {path or 'not cached: ' + 'SAM_DECODING_COST_PROFILE_CACHE=0'})")
    for row in table["rows"]:
        base = row["seconds"][0]
        cells = [
            f"q={q}: {seconds * 1000:.1f} ms" + (f" ({seconds / base:.2f}x)" if base else "")
            for q, seconds in zip(table["q"], row["seconds"])
            if seconds is not None
        ]
        print(f"  cache ~{row['cache_length']:.0f} tokens: " + ", ".join(cells))
    return 0
