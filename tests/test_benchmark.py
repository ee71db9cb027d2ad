"""The benchmark's suites, summaries and report writers, on synthetic measurements (no model runs)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from sam_decoding.benchmark.chart import write_speedup_chart
from sam_decoding.benchmark.report import RunInfo, read_json, render_markdown, write_json, write_markdown
from sam_decoding.benchmark.results import OVERALL, Measurement, summarize
from sam_decoding.benchmark.runner import busy_machine_note, first_difference
import sam_decoding
from sam_decoding.benchmark.static_corpus import FULL_DISTILLATION, QUICK_DISTILLATION, distillation_prompt_records
from sam_decoding.benchmark.suites import (
    MT_BENCH_CATEGORIES,
    SPEC_BENCH_SAMPLED_CATEGORIES,
    SuiteError,
    find_spec_bench_data,
    load_humaneval,
    load_questions_file,
    load_spec_bench_mini,
    read_spec_bench,
)


def synthetic_measurements() -> list[Measurement]:
    """Two categories; ``sam`` twice as fast as vanilla, ``pld`` 1.5x with one differing output."""
    measurements = []
    for question, category, vanilla_seconds in (("1", "code", 4.0), ("2", "code", 2.0), ("3", "chat", 5.0)):
        measurements += [
            Measurement(question, category, "vanilla", 100, vanilla_seconds, 100, vanilla_seconds),
            Measurement(question, category, "sam", 100, vanilla_seconds / 2, 25, vanilla_seconds / 4, True, None, {"static": 90}, {"static": 75}),
            Measurement(question, category, "pld", 100, vanilla_seconds / 1.5, 50, vanilla_seconds, question != "3", 7 if question == "3" else None),
        ]
    return measurements


INFO = RunInfo(
    suite="toy",
    model="tiny",
    max_new_tokens=100,
    methods={"vanilla": "plain", "sam": "suffix automata", "pld": "prompt lookup"},
    command="sam-decoding bench --suite toy",
    machine="test machine",
    started_at="2026-01-01T00:00:00+00:00",
    static_corpus="a toy corpus",
)


def test_summaries_pool_rates_and_compare_with_vanilla() -> None:
    summaries = {(s.group, s.method): s for s in summarize(synthetic_measurements())}
    overall_sam = summaries[(OVERALL, "sam")]
    assert overall_sam.questions == 3 and overall_sam.new_tokens == 300
    assert overall_sam.seconds == pytest.approx(5.5)
    assert overall_sam.speedup == pytest.approx(2.0)
    assert overall_sam.median_speedup == pytest.approx(2.0)
    assert overall_sam.cpu_speedup == pytest.approx(4.0)
    assert overall_sam.mat == pytest.approx(4.0)
    assert overall_sam.all_equal
    assert summaries[(OVERALL, "vanilla")].speedup == pytest.approx(1.0)
    assert summaries[(OVERALL, "vanilla")].mat == pytest.approx(1.0)
    assert summaries[("code", "pld")].all_equal and not summaries[("chat", "pld")].all_equal
    assert summaries[(OVERALL, "pld")].mismatches == 1
    assert summaries[("code", "pld")].speedup == pytest.approx(1.5)


def test_summaries_report_spread_and_policy_figures() -> None:
    measurements = [
        Measurement("1", "c", "vanilla", 100, 4.0, 100),
        Measurement("2", "c", "vanilla", 100, 4.0, 100),
        Measurement("3", "c", "vanilla", 100, 4.0, 100),
        Measurement("1", "c", "sam", 100, 4.0, 50, engine={"steps": 50, "drafted_tokens": 200, "accepted_tokens": 50,
                                                         "expected_accepted_tokens": 60.0, "draft_seconds": 0.1,
                                                         "policy_seconds": 0.1, "total_seconds": 4.0}),
        Measurement("2", "c", "sam", 100, 2.0, 50),
        Measurement("3", "c", "sam", 100, 1.0, 50),
    ]
    summary = {(s.group, s.method): s for s in summarize(measurements)}[(OVERALL, "sam")]
    assert summary.speedup_quartiles == pytest.approx((1.5, 3.0))
    assert summary.drafted_per_step == pytest.approx(4.0)
    assert summary.expected_accepted == pytest.approx(1.2)
    assert summary.accepted == pytest.approx(1.0)
    assert summary.overhead_share == pytest.approx(0.05)
    text = render_markdown(INFO, summarize(measurements))
    assert "| sam | 4.0 | 1.20 | 1.00 | 5.0% |" in text.splitlines()


def test_modelled_speedup_uses_modelled_seconds_of_both_methods() -> None:
    measurements = [
        Measurement("1", "c", "vanilla", 100, 9.0, 100, engine={"modelled_seconds": 6.5}),
        Measurement("1", "c", "sam", 100, 1.0, 50, engine={"modelled_seconds": 3.25}),
        Measurement("1", "c", "hf", 100, 1.0, 50),
    ]
    summaries = {(s.group, s.method): s for s in summarize(measurements)}
    assert summaries[(OVERALL, "sam")].modelled_speedup == pytest.approx(2.0)
    assert summaries[(OVERALL, "sam")].speedup == pytest.approx(9.0)
    assert summaries[(OVERALL, "hf")].modelled_speedup is None


def test_markdown_report_has_overall_and_category_tables() -> None:
    text = render_markdown(INFO, summarize(synthetic_measurements()))
    lines = text.splitlines()
    assert lines[0].startswith("### toy: tiny")
    assert "Command: `sam-decoding bench --suite toy`" in text
    # Median speed-ups carry the quartiles of the per-question ratios as their spread.
    assert "| sam | 3 | 54.5 | 2.00× | 2.00× (2.00–2.00) | 4.00× | 4.00 | yes |" in lines
    assert "| pld | 3 | 40.9 | 1.50× | 1.50× (1.50–1.50) | 1.00× | 2.00 | no (1 of 3 differ) |" in lines
    assert "| vanilla | 3 | 27.3 | 1.00× | 1.00× (1.00–1.00) | 1.00× | 1.00 | reference |" in lines
    assert "| code | 2 | 33.3 | 2.00× / 4.00× (4.00) | 1.50× / 1.00× (2.00) | yes |" in lines
    assert "| chat | 1 | 20.0 | 2.00× / 4.00× (4.00) | 1.50× / 1.00× (2.00) | no: pld 1 |" in lines
    assert "| **overall** | 3 | 27.3 | 2.00× / 4.00× (4.00) | 1.50× / 1.00× (2.00) | no: pld 1 |" in lines


def test_json_report_round_trips(tmp_path: Path) -> None:
    measurements = synthetic_measurements()
    summaries = summarize(measurements)
    path = tmp_path / "toy.json"
    write_json(path, INFO, measurements, summaries)
    info, loaded = read_json(path)
    assert info == INFO and loaded == measurements
    document = json.loads(path.read_text(encoding="utf-8"))
    assert len(document["summaries"]) == len(summaries)
    write_markdown(tmp_path / "toy.md", INFO, summaries)
    assert (tmp_path / "toy.md").read_text(encoding="utf-8") == render_markdown(INFO, summaries)


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "toy.png"
    write_speedup_chart(path, summarize(synthetic_measurements()), "toy")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("tokens", "reference", "expected"),
    [([1, 2, 3], [1, 2, 3], None), ([1, 9, 3], [1, 2, 3], 1), ([1, 2], [1, 2, 3], 2), ([], [], None)],
)
def test_first_difference(tokens: list[int], reference: list[int], expected: int | None) -> None:
    assert first_difference(tokens, reference) == expected


def test_spec_bench_mini_selection() -> None:
    suite = load_spec_bench_mini()
    assert len(suite.questions) == 130
    assert suite.categories == list(MT_BENCH_CATEGORIES + SPEC_BENCH_SAMPLED_CATEGORIES)
    counts = {c: sum(q.category == c for q in suite.questions) for c in suite.categories}
    assert all(count == 10 for count in counts.values())
    assert len(suite.limited(3).questions) == 39
    interleaved = suite.limited(2).interleaved()
    assert [q.category for q in interleaved.questions[:13]] == suite.categories
    assert sorted(interleaved.questions, key=lambda q: q.question_id) == sorted(suite.limited(2).questions, key=lambda q: q.question_id)
    # The distillation prompts for the static corpus are disjoint from the evaluated questions.
    evaluated = {q.question_id for q in suite.questions}
    distilled = {str(r["question_id"]) for r in distillation_prompt_records(None, FULL_DISTILLATION)}
    assert len(distilled) == 60 and not evaluated & distilled


def test_quick_distillation_takes_short_prompts_only() -> None:
    from sam_decoding.models import load_tokenizer
    from sam_decoding.prompts import chat_prompt_ids

    tokenizer = load_tokenizer()
    records = distillation_prompt_records(None, QUICK_DISTILLATION, tokenizer)
    lengths = [chat_prompt_ids(tokenizer, r["turns"][0]).shape[1] for r in records]
    assert 150 <= len(records) <= 300 and max(lengths) <= QUICK_DISTILLATION.max_prompt_tokens
    counts = {c: sum(r["category"] == c for r in records) for c in SPEC_BENCH_SAMPLED_CATEGORIES}
    assert max(counts.values()) == QUICK_DISTILLATION.per_category and counts["rag"] == 0
    evaluated = {q.question_id for q in load_spec_bench_mini().questions}
    assert not evaluated & {str(r["question_id"]) for r in records}
    with pytest.raises(ValueError, match="needs the tokenizer"):
        distillation_prompt_records(None, QUICK_DISTILLATION)


def test_spec_bench_ships_with_the_package_and_its_notice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # found from the package, wherever the command runs
    path = find_spec_bench_data()
    assert path.parent == Path(sam_decoding.__file__).resolve().parent / "data" / "spec_bench"
    assert len(read_spec_bench(path)) == 480
    notice = (path.parent / "NOTICE").read_text(encoding="utf-8")
    assert "hemingkx/Spec-Bench" in notice and "data/spec_bench/question.jsonl" in notice and "Apache License" in notice
    assert f"sha256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in notice
    assert "Apache License\n                           Version 2.0" in (path.parent / "LICENSE").read_text(encoding="utf-8")
    with pytest.raises(SuiteError, match="nope.jsonl: no such file"):
        find_spec_bench_data(tmp_path / "nope.jsonl")


def test_busy_machine_note() -> None:
    note = busy_machine_note(2, load=3.5, cores=2)
    assert note is not None and "load average 3.5 on 2 cores" in note and "--threads 1" in note
    assert busy_machine_note(2, load=1.5, cores=2) is None
    assert busy_machine_note(1, load=9.0, cores=2) is None


def test_humaneval_suite() -> None:
    suite = load_humaneval()
    assert len(suite.questions) == 164
    assert suite.questions[0].question_id == "HumanEval/0"
    assert "def has_close_elements" in suite.questions[0].prompt


def test_questions_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "Why?"}\n{"turns": ["How?", "Then?"], "category": "x", "question_id": 9}\n', encoding="utf-8")
    suite = load_questions_file(path)
    assert [(q.question_id, q.category, q.prompt) for q in suite.questions] == [("1", "questions", "Why?"), ("9", "x", "How?")]
    with pytest.raises(SuiteError, match="no string field 'body'"):
        load_questions_file(path, prompt_field="body")


def serving_measurements() -> list[Measurement]:
    """Four requests in the order answered (ids deliberately not sorted): ``learner`` gets faster as it goes."""
    measurements = []
    for number, question in enumerate(("7", "3", "9", "1")):
        measurements += [
            Measurement(question, "chat", "vanilla", 100, 10.0, 100),
            # MAT 1, 2, 3, 4; time 10, 5, 10/3, 2.5 seconds: speed-up equals MAT.
            Measurement(question, "chat", "learner", 100, 10.0 / (number + 1), 100 // (number + 1)),
        ]
    return measurements


def test_learning_curve_follows_the_order_requests_were_answered() -> None:
    from sam_decoding.benchmark.serving import learning_curve, request_order

    assert request_order(serving_measurements()) == ["7", "3", "9", "1"]
    points = [p for p in learning_curve(serving_measurements()) if p.method == "learner"]
    assert [(p.index, p.question_id) for p in points] == [(1, "7"), (2, "3"), (3, "9"), (4, "1")]
    assert [p.mat for p in points] == pytest.approx([1.0, 2.0, 100 / 33, 4.0])
    assert [p.speedup for p in points] == pytest.approx([1.0, 2.0, 3.0, 4.0])


def test_serving_blocks_pool_consecutive_requests() -> None:
    from sam_decoding.benchmark.serving import block_summaries, render_serving_markdown

    blocks = {(s.group, s.method): s for s in block_summaries(serving_measurements(), window=2)}
    assert set(blocks) == {(g, m) for g in ("requests 1-2", "requests 3-4") for m in ("vanilla", "learner")}
    # Pooled: 200 tokens in 15 s against 200 in 20 s; then 200 in 35/6 s against 200 in 20 s.
    assert blocks[("requests 1-2", "learner")].speedup == pytest.approx(20 / 15)
    assert blocks[("requests 3-4", "learner")].speedup == pytest.approx(20 / (10 / 3 + 2.5))
    assert blocks[("requests 3-4", "learner")].mat == pytest.approx(200 / 58)
    markdown = render_serving_markdown(serving_measurements(), window=2)
    assert "| requests | learner |" in markdown and "| 1-2 | 1.33× (1.33) |" in markdown and "| 3-4 | 3.43× (3.45) |" in markdown
    with pytest.raises(ValueError, match="window"):
        block_summaries(serving_measurements(), window=0)


def test_serving_reports_write_the_curve(tmp_path: Path) -> None:
    import dataclasses

    from sam_decoding.benchmark.serving import serving_json, write_learning_curve_chart

    path = tmp_path / "toy-serving.png"
    write_learning_curve_chart(path, serving_measurements(), "toy", window=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    info = dataclasses.replace(INFO, serving=True)
    measurements = serving_measurements()
    write_json(tmp_path / "toy.json", info, measurements, summarize(measurements), extra={"serving": serving_json(measurements, 2)})
    document = json.loads((tmp_path / "toy.json").read_text(encoding="utf-8"))
    assert document["serving"]["requests"] == 4 and len(document["serving"]["learning_curve"]) == 8
    read_info, read_measurements = read_json(tmp_path / "toy.json")
    assert read_info.serving and [m.question_id for m in read_measurements] == [m.question_id for m in measurements]
    assert "Serving run" in render_markdown(read_info, summarize(read_measurements))


def test_missing_suffix_decoding_skips_its_methods_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from sam_decoding.benchmark.methods import unavailable_methods

    monkeypatch.setitem(sys.modules, "arctic_inference.suffix_decoding", None)
    kept, note = unavailable_methods(["vanilla", "suffix", "sam", "suffix+policy"])
    assert kept == ["vanilla", "sam"]
    assert note is not None and "\n" not in note and note.startswith("skipping suffix, suffix+policy: ")
    assert "pip install arctic-inference==0.3.0" in note
    assert unavailable_methods(["vanilla", "sam"]) == (["vanilla", "sam"], None)


def test_methods_that_learn_across_requests_need_a_serving_run() -> None:
    from sam_decoding.benchmark.methods import make_methods

    with pytest.raises(ValueError, match=r"\+cache methods .* only in a serving run"):
        make_methods(["vanilla", "sam+cache"], None)
