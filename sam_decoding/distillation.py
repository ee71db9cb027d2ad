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


#: Prompts answered together by one batched ``model.generate`` call.
DEFAULT_BATCH_SIZE = 16


def greedy_continuations(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    eos: Sequence[int],
    pad_token_id: int,
    on_step: Callable[[int], None] | None = None,
) -> list[list[int]]:
    """Plain greedy continuations of several prompts (token ids) from one batched ``model.generate`` call.

    The prompts are left padded with ``pad_token_id`` under an attention mask (transformers derives
    position ids from the mask), so each row computes what it would alone. Each continuation holds
    at most ``max_new_tokens`` tokens and ends after its first token in ``eos`` (kept).
    ``on_step(tokens generated so far)`` is called after every decoding step, for progress.

    The result equals decoding each prompt on its own except where a padded batch's different
    floating-point summation order flips a near-tie between the two most likely tokens (rare in
    fp32; the tests check equality on tiny models).
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    if not prompts:
        return []
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("cannot continue an empty prompt")
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.as_tensor(list(prompt), dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1

    class _StepCounter(StoppingCriteria):
        # A stopping criterion that never stops: transformers calls it once per step.
        def __call__(self, ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            if on_step is not None:
                on_step(ids.shape[1] - width)
            return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model.generate(
            input_ids.to(device),
            attention_mask=attention_mask.to(device),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=list(eos) or None,
            pad_token_id=pad_token_id,
            stopping_criteria=StoppingCriteriaList([_StepCounter()]),
        )
    stops = set(eos)
    continuations = []
    for row in output[:, width:].tolist():
        end = next((index + 1 for index, token in enumerate(row) if token in stops), len(row))
        continuations.append(row[:end])
    return continuations


def distill(
    model: Any,
    tokenizer: Any,
    prompts: Iterable[Prompt],
    *,
    max_new_tokens: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_answer: Callable[[Prompt, str], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one chat record ``{"id", "messages": [user, assistant]}`` per prompt, a batch at a time.

    Answers are the model's plain greedy decoding of each prompt as a single user turn, at most
    ``max_new_tokens`` tokens, computed ``batch_size`` prompts per ``model.generate`` call. Prompts
    are batched by length, longest first, to waste little on padding; so records come in that order,
    not the input's (each carries its ``id``). ``on_answer`` is called for each record as it is
    yielded, ``on_step`` as in :func:`greedy_continuations`.
    """
    from sam_decoding.prompts import chat_prompt_ids, eos_token_ids

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    encoded = [(prompt, chat_prompt_ids(tokenizer, prompt.text)[0].tolist()) for prompt in prompts]
    encoded.sort(key=lambda item: -len(item[1]))
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        answers = greedy_continuations(
            model, [ids for _, ids in batch], max_new_tokens=max_new_tokens, eos=eos, pad_token_id=pad, on_step=on_step
        )
        for (prompt, _), answer_ids in zip(batch, answers):
            answer = tokenizer.decode(answer_ids, skip_special_tokens=True)
            if on_answer is not None:
                on_answer(prompt, answer)
            yield {
                "id": prompt.prompt_id,
                "messages": [
                    {"role": "user", "content": prompt.text},
                    {"role": "assistant", "content": answer},
                ],
            }


def resume_distill_output(path: str | os.PathLike[str]) -> set[str]:
    """Prepare a distill output to be continued; return the ids it already answers (none if it does not exist).

    A killed run can leave its last line cut short: a last line without its newline is removed
    from the file (that prompt is answered again). Any other unreadable line is a ``CorpusError``.
    """
    file = Path(path)
    if not file.exists():
        return set()
    try:
        with open(file, "rb+") as handle:
            data = handle.read()
            complete = data.rfind(b"\n") + 1
            if complete < len(data):
                handle.truncate(complete)
        text = data[:complete].decode("utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"{file}: not UTF-8 text, so not a distill output to resume") from None
    except OSError as error:
        raise CorpusError(f"cannot read {file}: {error.strerror or error}") from None
    ids = set()
    for number, record in jsonl_records(text.splitlines(), str(file), CorpusError):
        if not isinstance(record, dict) or "id" not in record or "messages" not in record:
            raise CorpusError(f"{file}:{number}: not a distilled conversation (no id and messages), so not a distill output to resume")
        ids.add(str(record["id"]))
    return ids


def append_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Append ``records`` one JSON object a line to ``path``, flushing each line; return the count.

    Each record reaches the file as soon as it is yielded, so a killed run keeps what it finished
    and :func:`resume_distill_output` tells a re-run where to go on.
    """
    count = 0
    with open(path, "a", encoding="utf-8") as stream:
        for record in records:
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
            stream.flush()
            count += 1
    return count


def select_prompts(prompts: Sequence[Prompt], exclude_ids: Iterable[str], limit: int | None) -> list[Prompt]:
    """The first ``limit`` of ``prompts`` (all for ``None``), less those whose id is in ``exclude_ids``."""
    excluded = set(exclude_ids)
    chosen = prompts if limit is None else prompts[:limit]
    return [prompt for prompt in chosen if prompt.prompt_id not in excluded]
