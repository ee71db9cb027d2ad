"""Distillation: a chat corpus made of a model's own greedy answers to a list of prompts.

SAM-Decoding's static corpus works best when it holds text the target model itself tends to
write; answering representative prompts with plain greedy decoding and building the automaton over
the resulting conversations gives exactly that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sam_decoding.atomic_file import replacing_atomically
from sam_decoding.corpus import CorpusError
from sam_decoding.jsonl import jsonl_records


@dataclass(frozen=True)
class Prompt:
    """A user message to answer and an identifier carried into the corpus (``id`` field)."""

    prompt_id: str
    text: str


def read_prompts(path: str | os.PathLike[str], prompt_field: str | None = None) -> list[Prompt]:
    """Prompts of a JSONL file: ``prompt_field`` per line, else Spec-Bench style ``turns`` (first turn).

    Without ``prompt_field`` a ``prompt`` or ``question`` string field is also accepted.
    """
    file = Path(path)
    prompts = []
    try:
        with open(file, encoding="utf-8") as handle:
            for number, record in jsonl_records(handle, str(file), CorpusError):
                source = f"{file}:{number}"
                prompts.append(Prompt(_record_id(record, number), _prompt_text(record, prompt_field, source)))
    except UnicodeDecodeError:
        raise CorpusError(f"{file}: not UTF-8 text") from None
    except OSError as error:
        raise CorpusError(f"cannot read {file}: {error.strerror or error}") from None
    if not prompts:
        raise CorpusError(f"{file}: no prompts")
    return prompts


def _record_id(record: Any, line_number: int) -> str:
    if isinstance(record, dict):
        for key in ("question_id", "id", "task_id"):
            if key in record:
                return str(record[key])
    return str(line_number)


def _prompt_text(record: Any, prompt_field: str | None, source: str) -> str:
    if not isinstance(record, dict):
        raise CorpusError(f"{source}: expected a JSON object")
    if prompt_field is not None:
        value = record.get(prompt_field)
        if not isinstance(value, str) or not value.strip():
            raise CorpusError(f"{source}: no non-empty string field {prompt_field!r}")
        return value
    turns = record.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], str):
        return turns[0]
    for key in ("prompt", "question"):
        if isinstance(record.get(key), str) and record[key].strip():
            return record[key]
    fields = ", ".join(sorted(map(str, record))) or "none"
    raise CorpusError(f"{source}: no prompt found (fields: {fields}); pass --prompt-field")


def greedy_answer(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """The model's plain greedy answer to ``prompt`` as a single user turn (at most ``max_new_tokens`` tokens)."""
    import torch

    from sam_decoding.prompts import chat_prompt_ids, eos_token_ids

    input_ids = chat_prompt_ids(tokenizer, prompt)
    eos = eos_token_ids(model, tokenizer)
    with torch.inference_mode():
        output = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos or None,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0],
        )
    return tokenizer.decode(output[0, input_ids.shape[1] :], skip_special_tokens=True)


def distill(
    model: Any,
    tokenizer: Any,
    prompts: Iterable[Prompt],
    *,
    max_new_tokens: int,
    on_answer: Callable[[Prompt, str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one chat record ``{"id", "messages": [user, assistant]}`` per prompt."""
    for prompt in prompts:
        answer = greedy_answer(model, tokenizer, prompt.text, max_new_tokens)
        if on_answer is not None:
            on_answer(prompt, answer)
        yield {
            "id": prompt.prompt_id,
            "messages": [
                {"role": "user", "content": prompt.text},
                {"role": "assistant", "content": answer},
            ],
        }


def write_jsonl_atomically(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write ``records`` one JSON object a line to ``path`` via a temporary file; return the count.

    An interrupted run leaves no partial file at ``path``.
    """
    count = 0
    with replacing_atomically(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def select_prompts(prompts: Sequence[Prompt], exclude_ids: Iterable[str], limit: int | None) -> list[Prompt]:
    """``prompts`` without ``exclude_ids``, cut to the first ``limit``."""
    excluded = set(exclude_ids)
    kept = [prompt for prompt in prompts if prompt.prompt_id not in excluded]
    return kept if limit is None else kept[:limit]
