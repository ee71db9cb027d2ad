"""Training draft heads end to end: cache the model's hidden states behind its own answers, train
the heads on them, and write the heads file with a record of how they were made.

Three stages, each resumable (run the same job again after an interruption): features go to a
cache in the job's work directory, training checkpoints beside them, and the file is written last.
The caller loads the model and reads the inputs (prompts to answer, or answers already distilled);
``sam-decoding train-heads`` is one such caller.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sam_decoding.heads.features import FeatureStore
from sam_decoding.heads.identity import ModelIdentity
from sam_decoding.heads.model import DEFAULT_NUM_HEADS, MedusaHeads
from sam_decoding.heads.training import TrainingReport, TrainingSettings, draft_vocabulary, head_targets, train

#: One answer already written: ``(id, prompt + answer token ids (int64), prompt length in tokens)``.
Answer = tuple[str, torch.Tensor, int]


@dataclass(frozen=True)
class HeadsTrainingJob:
    """What to train and where.

    Attributes:
        output: The heads file to write (safetensors).
        work_dir: Feature cache and checkpoints (kept, so a re-run resumes).
        num_heads: Heads, i.e. draft depth in tokens.
        settings: The training loop's settings.
        draft_vocab: Tokens the heads may propose (the answers' most frequent); 0: the whole vocabulary.
        max_new_tokens: Answer length cap, in tokens, when the model answers prompts.
        batch_tokens: Padded tokens per answering batch.
        max_batch: Most answers generated together.
        input_name: Name of the input file (recorded, and part of the feature cache's identity).
        record: More fields for the file's training record (e.g. the command that ran).
    """

    output: Path
    work_dir: Path
    input_name: str = ""
    num_heads: int = DEFAULT_NUM_HEADS
    settings: TrainingSettings = field(default_factory=TrainingSettings)
    draft_vocab: int = 8192
    max_new_tokens: int = 128
    batch_tokens: int = 8192
    max_batch: int = 32
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HeadsTrainingResult:
    """The trained heads (already written to the job's output) and how they were made.

    ``record`` is what the file keeps; the times are this run's, in seconds."""

    heads: MedusaHeads
    report: TrainingReport
    record: dict[str, Any]
    feature_seconds: float
    total_seconds: float


def train_heads(
    model: torch.nn.Module,
    tokenizer: Any,
    job: HeadsTrainingJob,
    *,
    prompts: Sequence[Any] | None = None,
    answers: Sequence[Answer] | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> HeadsTrainingResult:
    """Train heads for ``model`` on its greedy answers to ``prompts`` (encoded prompts of
    :mod:`~sam_decoding.heads.self_distillation`) or on given ``answers`` (one of the two), and
    write them to ``job.output``. Raises ``ValueError`` (e.g. ``FeatureCacheError``) for a work
    directory of another job or unusable training data."""
    if (prompts is None) == (answers is None):
        raise ValueError("pass either prompts or answers")
    say = log or _log
    started = time.perf_counter()
    fingerprint = _tokenizer_fingerprint(tokenizer)
    identity = ModelIdentity.of(model)
    source = "answers" if answers is not None else "generated"
    store = _open_features(job, identity, fingerprint, source)
    feature_started = time.perf_counter()
    _cache_features(model, tokenizer, job, store, prompts, answers, show_progress, say)
    feature_seconds = time.perf_counter() - feature_started
    say(f"features: {len(store.spans)} answers, {store.rows} positions cached ({feature_seconds:.0f} s this run)")
    heads, report = _train(model, job, store, identity, fingerprint, show_progress, say)
    total_seconds = time.perf_counter() - started
    record = {
        **job.record,
        "input": job.input_name,
        "source": source,
        "max_new_tokens": None if answers is not None else job.max_new_tokens,
        "settings": job.settings.__dict__,
        "draft_vocab_size": None if heads.vocabulary is None else len(heads.vocabulary),
        "feature_seconds_this_run": round(feature_seconds, 1),
        "training_seconds_this_run": round(report.seconds, 1),
        "total_seconds_this_run": round(total_seconds, 1),
        **{k: v for k, v in report.as_dict().items() if k != "seconds"},
    }
    heads.training_record = record
    heads.save(job.output)
    return HeadsTrainingResult(heads, report, record, feature_seconds, total_seconds)


def _open_features(job: HeadsTrainingJob, identity: ModelIdentity, fingerprint: str, source: str) -> FeatureStore:
    """The job's feature cache, refusing one written for another model, tokenizer or input."""
    meta = {
        "hidden_size": identity.hidden_size,
        "model": identity.fingerprint,
        "model_probe_sha256": hashlib.sha256(identity.probe.numpy().tobytes()).hexdigest()[:16],
        "tokenizer": fingerprint,
        "input": job.input_name,
        "source": source,
        "max_new_tokens": None if source == "answers" else job.max_new_tokens,
    }
    return FeatureStore.open_for_writing(job.work_dir / "features", meta)


def _cache_features(model: torch.nn.Module, tokenizer: Any, job: HeadsTrainingJob, store: FeatureStore,
                    prompts: Sequence[Any] | None, answers: Sequence[Answer] | None, show_progress: bool,
                    say: Callable[[str], None]) -> None:
    """Stage 1: the hidden states behind every answer not cached yet."""
    from tqdm import tqdm

    from sam_decoding.heads.self_distillation import extract_features, generate_features

    cached = store.sequence_ids()
    disable = None if show_progress else True
    if answers is not None:
        todo = [answer for answer in answers if answer[0] not in cached]
        say(f"{len(answers)} answers; {len(cached)} already cached in {job.work_dir}")
        with tqdm(total=len(todo), unit=" answers", file=sys.stderr, disable=disable, desc="reading answers") as bar:
            extract_features(model, answers, store, batch_tokens=job.batch_tokens, max_batch=job.max_batch,
                             on_sequence=lambda _: bar.update(1))
        return
    from sam_decoding.prompts import eos_token_ids

    assert prompts is not None
    todo = [prompt for prompt in prompts if prompt.prompt_id not in cached]
    say(f"{len(prompts)} prompts; {len(cached)} already answered in {job.work_dir}")
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos or [0])[0]
    with tqdm(total=len(todo), unit=" answers", file=sys.stderr, disable=disable, desc="answering") as bar:
        generate_features(model, prompts, store, max_new_tokens=job.max_new_tokens, eos=eos, pad_token_id=pad,
                          batch_tokens=job.batch_tokens, max_batch=job.max_batch, on_answer=lambda _: bar.update(1))


def _train(model: torch.nn.Module, job: HeadsTrainingJob, store: FeatureStore, identity: ModelIdentity,
           fingerprint: str, show_progress: bool, say: Callable[[str], None]) -> tuple[MedusaHeads, TrainingReport]:
    """Stage 2: heads trained on the cached states, resuming from this exact job's checkpoint."""
    from tqdm import tqdm

    settings = job.settings
    _, train_labels = head_targets(store, False, settings.held_out_fraction, job.num_heads)
    vocabulary = None
    if job.draft_vocab and job.draft_vocab < identity.vocab_size:
        vocabulary = draft_vocabulary(train_labels, job.draft_vocab, identity.vocab_size)
    heads = MedusaHeads.create(model, job.num_heads, vocabulary=vocabulary, tokenizer_fingerprint=fingerprint)
    run_key = hashlib.sha256(
        json.dumps([settings.__dict__, job.num_heads, None if vocabulary is None else vocabulary.tolist(), store.rows]).encode()
    ).hexdigest()[:12]
    checkpoint = job.work_dir / f"checkpoint-{run_key}.pt"
    if checkpoint.is_file():
        say(f"resuming training from {checkpoint}")
    with tqdm(total=None, unit=" steps", file=sys.stderr, disable=None if show_progress else True, desc="training") as bar:

        def on_step(step: int, total: int, loss: float) -> None:
            bar.total = total
            bar.n = step
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
            bar.refresh()

        report = train(heads, store, settings, checkpoint=checkpoint, on_step=on_step)
    return heads, report


def accuracy_table(report: TrainingReport) -> str:
    """Held-out top-1/top-5 accuracy per head, trained and (in brackets) at the start, as text."""
    lines = ["head  predicts  held-out positions  top-1 (start)  top-5 (start)"]
    start = {a.head: a for a in report.at_start}
    for accuracy in report.trained:
        before = start.get(accuracy.head)
        lines.append(
            f"{accuracy.head:>4}  t+{accuracy.head + 1:<7} {accuracy.positions:>18}  "
            f"{accuracy.top1:.3f} ({before.top1 if before else float('nan'):.3f})  "
            f"{accuracy.top5:.3f} ({before.top5 if before else float('nan'):.3f})"
        )
    return "\n".join(lines)


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    from sam_decoding.models import tokenizer_fingerprint

    return tokenizer_fingerprint(tokenizer)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
