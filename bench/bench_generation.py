"""Run the spec-bench-mini comparison of decoding methods and print its Markdown table.

A thin wrapper over ``sam-decoding bench``; any of its options may follow, e.g.::

    python bench/bench_generation.py --limit 3 --out bench/out
    python bench/bench_generation.py --suite humaneval --limit 20
"""

from __future__ import annotations

import sys

from sam_decoding.cli import main

if __name__ == "__main__":
    arguments = sys.argv[1:]
    if not any(a in ("--suite", "--questions") or a.startswith(("--suite=", "--questions=")) for a in arguments):
        arguments = ["--suite", "spec-bench-mini", *arguments]
    if not any(a == "--out" or a.startswith("--out=") for a in arguments):
        arguments += ["--out", "bench/out"]
    sys.exit(main(["bench", *arguments]))
