"""The heads shipped for the default model (SmolLM2-135M-Instruct), trained with ``sam-decoding train-heads``.

How they were trained, and their held-out accuracy, is recorded inside the file (its ``training``
record) and in ``bench/results/heads/`` of the source repository.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_HEADS_FILE = "smollm2-135m-instruct.safetensors"


def default_heads_path() -> Path:
    """Path of the default model's heads file inside the installed package.

    Raises:
        FileNotFoundError: The package was installed without its data files.
    """
    path = Path(__file__).resolve().parent.parent / "data" / "heads" / DEFAULT_HEADS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"the default model's heads file is missing from the package ({path}); pass a heads file")
    return path
