"""The command line end to end: build from every input kind, info, generate, distill, bench, and bad input.

Generation runs on a tiny random llama saved to a temporary directory with the default model's
tokenizer (vocabulary 49152), so the whole file takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam_decoding.benchmark.methods import DEFAULT_METHODS, QUICK_METHOD_NAMES
from sam_decoding.cli import main
from sam_decoding.cli.bench import QUICK_MAX_NEW_TOKENS

CHAT = [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Seven is a prime number."}]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run ``sam-decoding ARGV`` in process; return (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random llama with the default model's tokenizer and chat template, saved to disk."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sam_decoding.models import load_tokenizer

    directory = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=1024, bos_token_id=1, eos_token_id=2, pad_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    load_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One input of each kind."""
    root = tmp_path_factory.mktemp("inputs")
    text = root / "notes.txt"
    text.write_text("The cat sat on the mat. The cat sat on the hat.\n", encoding="utf-8")
    tree = root / "src"
    (tree / "pkg").mkdir(parents=True)
    (tree / "pkg" / "a.py").write_text("def add(a, b):\n    return a + b\n", encoding="utf-8")
    (tree / "pkg" / "b.py").write_text("def sub(a, b):\n    return a - b\n", encoding="utf-8")
    (tree / "pkg" / "notes.md").write_text("not selected by the glob\n", encoding="utf-8")
    articles = root / "articles.jsonl"
    articles.write_text("".join(json.dumps({"body": f"Article {i} says hello."}) + "\n" for i in range(3)), encoding="utf-8")
    chats = root / "chats.jsonl"
    chats.write_text(json.dumps({"messages": CHAT}) + "\n" + json.dumps(CHAT) + "\n", encoding="utf-8")
    return {"text": text, "tree": tree, "articles": articles, "chats": chats}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, inputs: dict[str, Path]) -> Path:
    """A corpus built from the text file and the chats."""
    output = tmp_path_factory.mktemp("corpus") / "corpus.sam"
    assert main(["build", str(inputs["text"]), str(inputs["chats"]), "-o", str(output)]) == 0
    return output


def info_json(capsys: pytest.CaptureFixture[str], path: Path) -> dict:
    code, out, _ = run_cli(capsys, "info", path, "--json")
    assert code == 0
    return json.loads(out)


@pytest.mark.parametrize(
    ("kind", "options", "documents"),
    [
        ("text", [], 1),
        ("tree", ["--glob", "**/*.py"], 2),
        ("articles", ["--text-field", "body"], 3),
        ("chats", [], 2),
        ("chats", ["--chat-field", "messages"], None),
    ],
)
def test_build_from_each_input_kind(capsys, tmp_path, inputs, kind, options, documents) -> None:
    output = tmp_path / "out.sam"
    code, out, err = run_cli(capsys, "build", inputs[kind], *options, "-o", output, "--no-progress")
    if documents is None:
        # The second chat line is a bare message list, which has no "messages" field.
        assert code == 1 and "no field 'messages'" in err
        return
    assert code == 0, err
    assert f"wrote {output}" in out and "bytes/token" in out
    facts = info_json(capsys, output)
    assert facts["documents"] == documents
    assert facts["build"]["documents"] == documents
    assert facts["build"]["glob"] == (options[1] if options[:1] == ["--glob"] else "**/*")
    assert facts["tokens"] == facts["build"]["tokens"] > 0
    assert facts["tokenizer_fingerprint"].startswith("vocab49152-")


def test_info_prints_sizes_and_verifies(capsys, corpus) -> None:
    code, out, err = run_cli(capsys, "info", corpus, "--verify")
    assert code == 0, err
    for label in ("format version", "tokens", "documents", "states", "bytes per token", "tokenizer fingerprint", "verified", "build parameters"):
        assert label in out
    assert info_json(capsys, corpus)["build"]["chat_documents"] == 2


def test_generate_with_corpus_equals_plain_decoding(capsys, tiny_model_dir, corpus) -> None:
    common = ["generate", "--model", tiny_model_dir, "--chat", "The cat sat", "--max-new-tokens", "24"]
    code, speculative, err = run_cli(capsys, *common, "--corpus", corpus)
    assert code == 0, err
    assert "tokens/s" in err and "MAT" in err and "tokens from:" in err
    code, plain, err = run_cli(capsys, *common, "--no-speculation")
    assert code == 0, err
    assert "plain decoding" in err
    assert speculative == plain


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sharded_build_info_and_generate(capsys, tmp_path, inputs, tiny_model_dir, jobs) -> None:
    output = tmp_path / "shards"
    sources = [inputs["tree"], inputs["articles"], inputs["chats"], inputs["text"]]
    code, out, err = run_cli(capsys, "build", *sources, "--text-field", "body", "--glob", "**/*.py",
                             "--shard-tokens", "40", "--jobs", jobs, "-o", output, "--no-progress")
    if code != 0 and "no field 'body'" in err:  # the chats have no "body": build them separately
        code, out, err = run_cli(capsys, "build", inputs["tree"], inputs["text"], "--glob", "**/*.py",
                                 "--shard-tokens", "40", "--jobs", jobs, "-o", output, "--no-progress")
    assert code == 0, err
    assert "shards" in out and "bytes/token" in out
    single = tmp_path / "single.sam"
    assert run_cli(capsys, "build", inputs["tree"], inputs["text"], "--glob", "**/*.py", "-o", single,
                   "--no-progress")[0] == 0
    facts = info_json(capsys, output)
    assert facts["shards"] > 1
    assert facts["tokens"] == info_json(capsys, single)["tokens"] == facts["build"]["tokens"]
    assert facts["documents"] == 3 and facts["build"]["shard_tokens"] == 40
    assert info_json(capsys, output / "manifest.json")["tokens"] == facts["tokens"]
    code, out, err = run_cli(capsys, "info", output, "--verify")
    assert code == 0 and "verified" in out, err
    common = ["generate", "--model", tiny_model_dir, "--prompt", "def add(a, b):", "--max-new-tokens", "16"]
    code, speculative, err = run_cli(capsys, *common, "--corpus", output)
    assert code == 0, err
    assert speculative == run_cli(capsys, *common, "--no-speculation")[1]
    # A second build into the same, now non-empty, directory is refused.
    code, _, err = run_cli(capsys, "build", inputs["text"], "--shard-tokens", "40", "-o", output)
    assert code == 1 and "empty directory" in err


def test_jobs_without_shards_is_refused(capsys, tmp_path, inputs) -> None:
    code, _, err = run_cli(capsys, "build", inputs["text"], "--jobs", "2", "-o", tmp_path / "x.sam")
    assert code == 1 and "--shard-tokens" in err
    code, _, err = run_cli(capsys, "build", inputs["text"], "--shard-tokens", "0", "-o", tmp_path / "x")
    assert code == 2


def test_generate_streams_and_samples(capsys, tiny_model_dir) -> None:
    common = ["generate", "--model", tiny_model_dir, "--prompt", "def add(a, b):", "--max-new-tokens", "12"]
    sampled = [run_cli(capsys, *common, "--do-sample", "--temperature", "0.8", "--top-p", "0.9", "--seed", "7") for _ in range(2)]
    assert sampled[0][0] == 0 and sampled[0][1] == sampled[1][1]
    code, out, err = run_cli(capsys, *common, "--stream", "--no-fallback")
    assert code == 0, err
    assert out.strip()


def test_generate_json_from_a_file_with_system_and_draft_settings(capsys, tmp_path, tiny_model_dir, corpus) -> None:
    question = tmp_path / "question.txt"
    question.write_text("The cat sat\n", encoding="utf-8")
    common = ["generate", "--model", tiny_model_dir, "--chat-file", question, "--system", "Be brief.", "--max-new-tokens", "16",
              "--json", "--dtype", "float32", "--device", "cpu"]
    code, out, err = run_cli(
        capsys, *common, "--corpus", corpus, "--fallback", "prompt-lookup", "--no-tree", "--max-draft", "4",
        "--min-probability", "0.05", "--policy", "all",
    )
    assert code == 0, err
    assert err == "" and len(out.splitlines()) == 1
    record = json.loads(out)
    assert record["speculation"] is True and record["stats"]["new_tokens"] == len(record["new_token_ids"]) > 0
    assert {"steps", "mean_accepted_tokens", "tokens_per_second", "accepted_by_source"} <= set(record["stats"])
    assert "static" not in record["stats"]["drafts_by_source"] or record["stats"]["drafted_tokens"] <= 4 * record["stats"]["steps"]
    code, plain, err = run_cli(capsys, *common, "--no-speculation")
    assert code == 0, err
    plain_record = json.loads(plain)
    assert plain_record["speculation"] is False
    assert plain_record["new_token_ids"] == record["new_token_ids"] and plain_record["text"] == record["text"]
    # The system message is part of the prompt (SmolLM2's template otherwise inserts its own, longer one).
    code, out, err = run_cli(capsys, "generate", "--model", tiny_model_dir, "--chat-file", question, "--max-new-tokens", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["prompt_tokens"] != record["prompt_tokens"]


def test_generate_reads_the_prompt_from_stdin(capsys, monkeypatch, tmp_path, tiny_model_dir) -> None:
    import io

    text = "def add(a, b):\n    return"
    prompt_file = tmp_path / "prompt.py"
    prompt_file.write_text(text, encoding="utf-8")
    common = ["generate", "--model", tiny_model_dir, "--max-new-tokens", "8", "--json"]
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, from_stdin, err = run_cli(capsys, *common, "--prompt-file", "-")
    assert code == 0, err
    code, from_file, err = run_cli(capsys, *common, "--prompt-file", prompt_file)
    assert code == 0, err
    code, from_flag, err = run_cli(capsys, *common, "--prompt", text)
    assert code == 0, err
    ids = [json.loads(out)["new_token_ids"] for out in (from_stdin, from_file, from_flag)]
    assert ids[0] == ids[1] == ids[2]


def test_generate_help_names_the_drafters_defaults(capsys) -> None:
    from sam_decoding.drafters.sam import DEFAULT_MAX_DRAFT, DEFAULT_MIN_PROBABILITY

    code, out, _ = run_cli(capsys, "generate", "--help")
    assert code == 0
    flat = " ".join(out.split())
    for flag, default in (("--min-probability P", DEFAULT_MIN_PROBABILITY), ("--max-draft N", DEFAULT_MAX_DRAFT)):
        assert f"(default: {default})" in flat.split(flag, 2)[-1].split("--", 1)[0], flag


def test_generate_refuses_a_corpus_of_another_tokenizer(capsys, tmp_path, tiny_model_dir) -> None:
    from sam_decoding import StaticAutomaton

    foreign = tmp_path / "foreign.sam"
    StaticAutomaton.build([[5, 6, 7, 8]], tokenizer_fingerprint="vocab32000-sha256:0123456789abcdef").save(foreign)
    code, _, err = run_cli(capsys, "generate", "--model", tiny_model_dir, "--corpus", foreign, "--prompt", "hi")
    assert code == 1
    assert "refusing a corpus built for another tokenizer" in err
    assert "vocab32000-sha256:0123456789abcdef" in err and "vocab49152-" in err
    assert err.count("\n") == 1


def test_distill_writes_a_chat_corpus_that_builds(capsys, tmp_path, tiny_model_dir) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"question_id": 7, "turns": ["Hello?", "And then?"]}) + "\n" + json.dumps({"question_id": 8, "turns": ["Why?"]}) + "\n",
        encoding="utf-8",
    )
    answers = tmp_path / "answers.jsonl"
    code, out, err = run_cli(capsys, "distill", prompts, "-o", answers, "--model", tiny_model_dir, "--max-new-tokens", "6")
    assert code == 0, err
    records = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in records] == ["7", "8"]
    assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant"]
    assert records[0]["messages"][0]["content"] == "Hello?"
    code, _, err = run_cli(capsys, "build", answers, "-o", tmp_path / "answers.sam", "--tokenizer", tiny_model_dir)
    assert code == 0, err


def test_distill_resumes_an_interrupted_output(capsys, tmp_path, tiny_model_dir) -> None:
    prompts = tmp_path / "prompts.jsonl"
    texts = ["Hello?", "Why is the sky blue? Explain it to a child in a few words.", "Name a prime.", "Count to three."]
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    answers = tmp_path / "answers.jsonl"
    options = ["--model", tiny_model_dir, "--max-new-tokens", "12"]
    code, _, err = run_cli(capsys, "distill", prompts, "-o", answers, "--limit", "3", *options)
    assert code == 0, err
    # A run killed while writing its third record leaves a cut last line.
    lines = answers.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 3
    answers.write_text("".join(lines[:2]) + lines[2][:15], encoding="utf-8")
    code, out, err = run_cli(capsys, "distill", prompts, "-o", answers, *options)
    assert code == 0, err
    assert "resuming" in err and "2 of 4 prompts already answered" in err and "wrote 2 conversations" in out
    records = [json.loads(line) for line in answers.read_text(encoding="utf-8").splitlines()]
    assert sorted(r["id"] for r in records) == ["p0", "p1", "p2", "p3"]
    # Batched answers (in two runs) equal one-at-a-time ones.
    alone = tmp_path / "alone.jsonl"
    code, _, err = run_cli(capsys, "distill", prompts, "-o", alone, "--batch-size", "1", *options)
    assert code == 0, err
    expected = {r["id"]: r for r in map(json.loads, alone.read_text(encoding="utf-8").splitlines())}
    assert {r["id"]: r for r in records} == expected
    before = answers.read_bytes()
    code, out, err = run_cli(capsys, "distill", prompts, "-o", answers, *options)
    assert code == 0 and "all 4 prompts already answered" in out and answers.read_bytes() == before


def test_bench_distilled_corpus_is_cached_and_resumed(tmp_path, tiny_model_dir) -> None:
    from sam_decoding.benchmark.static_corpus import DistillationPlan, distilled_corpus
    from sam_decoding.models import load_model, load_tokenizer

    model, tokenizer = load_model(tiny_model_dir), load_tokenizer(tiny_model_dir)
    plan = DistillationPlan(per_category=2, max_new_tokens=4)
    cache = tmp_path / "cache"
    messages: list[str] = []
    first = distilled_corpus(model, tokenizer, "tiny", cache, plan, progress=False, log=messages.append)
    assert any(m.startswith("distilling the static corpus") for m in messages)
    answers = first.path.with_suffix(".jsonl")
    assert len(answers.read_text(encoding="utf-8").splitlines()) == 10  # 2 per sampled category
    # Cached: a second run needs no model at all.
    messages.clear()
    second = distilled_corpus(None, tokenizer, "tiny", cache, plan, progress=False, log=messages.append)
    assert second == first and messages == []
    # Interrupted after 7 answers, the eighth cut short: only the 3 missing ones are distilled.
    lines = answers.read_text(encoding="utf-8").splitlines(keepends=True)
    answers.write_text("".join(lines[:7]) + lines[7][:9], encoding="utf-8")
    third = distilled_corpus(model, tokenizer, "tiny", cache, plan, progress=False, log=messages.append)
    assert third.path == first.path and "resuming after 7" in messages[0] and "distilled 3 answers" in messages[-1]
    assert sorted(answers.read_text(encoding="utf-8").splitlines()) == sorted(line.rstrip("\n") for line in lines)


def test_bench_quick_smoke_run(capsys, tmp_path, tiny_model_dir, corpus) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        "".join(json.dumps({"question_id": i, "category": c, "turns": [t]}) + "\n" for i, (c, t) in enumerate(
            [("cats", "The cat sat"), ("cats", "A cat"), ("code", "def add(a, b):")]
        )),
        encoding="utf-8",
    )
    out_dir = tmp_path / "report"
    code, out, err = run_cli(
        capsys, "bench", "--questions", questions, "--model", tiny_model_dir, "--corpus", corpus,
        "--max-new-tokens", "8", "--quick", "--methods", ",".join(DEFAULT_METHODS), "--out", out_dir,
    )
    assert code == 0, err
    assert "| method |" in out and "sam+tr" in out
    record = json.loads((out_dir / "questions.json").read_text(encoding="utf-8"))
    assert {m["method"] for m in record["measurements"]} == set(DEFAULT_METHODS)
    assert len({m["question_id"] for m in record["measurements"]}) == 2  # --quick: one per category
    assert all(m["equal_to_reference"] is not None for m in record["measurements"] if m["method"] != "vanilla")
    assert (out_dir / "questions.md").read_text(encoding="utf-8").startswith("### questions")
    assert (out_dir / "questions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, out, err = run_cli(capsys, "bench", "--from-json", out_dir / "questions.json", "--out", tmp_path / "redrawn")
    assert code == 0, err
    assert "redrawn from `questions.json`: 2 questions measured" in out
    assert (tmp_path / "redrawn" / "questions.png").is_file()


def test_bench_runs_any_fixed_chain_cap(capsys, tmp_path, tiny_model_dir, corpus) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "cats", "turns": ["The cat sat"]}) + "\n", encoding="utf-8")
    code, out, err = run_cli(
        capsys, "bench", "--questions", questions, "--model", tiny_model_dir, "--corpus", corpus,
        "--max-new-tokens", "8", "--methods", "vanilla,sam-chain3-fixed", "--out", tmp_path / "report",
    )
    assert code == 0, err
    assert "chains of at most 3 tokens" in out
    record = json.loads((tmp_path / "report" / "questions.json").read_text(encoding="utf-8"))
    assert [m["equal_to_reference"] for m in record["measurements"] if m["method"] == "sam-chain3-fixed"] == [True]


def test_bench_quick_defaults(capsys, tmp_path, tiny_model_dir, corpus) -> None:
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 1, "category": "cats", "turns": ["The cat sat"]}) + "\n", encoding="utf-8")
    code, out, err = run_cli(
        capsys, "bench", "--questions", questions, "--model", tiny_model_dir, "--corpus", corpus, "--quick", "--out", tmp_path
    )
    assert code == 0, err
    run = json.loads((tmp_path / "questions.json").read_text(encoding="utf-8"))["run"]
    assert list(run["methods"]) == list(QUICK_METHOD_NAMES) and run["max_new_tokens"] == QUICK_MAX_NEW_TOKENS
    assert all(f"| {name} |" in out for name in QUICK_METHOD_NAMES)


def _bad_inputs(root: Path, model: Path, corpus: Path) -> dict[str, list[str | Path]]:
    empty = root / "empty.txt"
    empty.write_text("", encoding="utf-8")
    binary = root / "blob.bin"
    binary.write_bytes(b"\x00\x01\x02")
    junk = root / "junk.sam"
    junk.write_bytes(b"definitely not an automaton")
    truncated = root / "truncated.sam"
    truncated.write_bytes(corpus.read_bytes()[: corpus.stat().st_size // 2])
    bad_jsonl = root / "bad.jsonl"
    bad_jsonl.write_text('{"title": 1}\n', encoding="utf-8")
    not_a_model = root / "not-a-model"
    not_a_model.mkdir(exist_ok=True)
    no_prompts = root / "noprompts.jsonl"
    no_prompts.write_text('{"answer": "x"}\n', encoding="utf-8")
    prompts = root / "prompts.jsonl"
    prompts.write_text('{"prompt": "Hi?"}\n', encoding="utf-8")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    return {
        "build-missing-input": ["build", root / "nope.txt", "-o", root / "x.sam"],
        "build-missing-output-dir": ["build", empty, "-o", root / "no" / "dir" / "x.sam"],
        "build-empty-input": ["build", empty, "-o", root / "x.sam"],
        "build-binary-input": ["build", binary, "-o", root / "x.sam"],
        "build-undetectable-jsonl": ["build", bad_jsonl, "-o", root / "x.sam"],
        "build-missing-tokenizer": ["build", corpus.parent, "--glob", "*.txt", "--tokenizer", root / "no-tokenizer", "-o", root / "x.sam"],
        "build-tokenizer-not-a-model": ["build", empty, "--tokenizer", not_a_model, "-o", root / "x.sam"],
        "info-missing": ["info", root / "nope.sam"],
        "info-junk": ["info", junk],
        "info-truncated": ["info", truncated, "--verify"],
        "info-directory": ["info", root],
        "generate-missing-model": ["generate", "--model", root / "no-model", "--prompt", "hi"],
        "generate-not-a-model": ["generate", "--model", not_a_model, "--prompt", "hi"],
        "generate-corrupt-corpus": ["generate", "--model", model, "--corpus", junk, "--prompt", "hi"],
        "generate-zero-tokens": ["generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "0"],
        "generate-bad-min-probability": ["generate", "--model", model, "--prompt", "hi", "--min-probability", "1.5"],
        "generate-bad-max-draft": ["generate", "--model", model, "--prompt", "hi", "--max-draft", "-2"],
        "generate-bad-top-k": ["generate", "--model", model, "--prompt", "hi", "--do-sample", "--top-k", "-1"],
        "generate-bad-fallback": ["generate", "--model", model, "--prompt", "hi", "--fallback", "medusa"],
        "generate-bad-dtype": ["generate", "--model", model, "--prompt", "hi", "--dtype", "int8"],
        "generate-bad-device": ["generate", "--model", model, "--prompt", "hi", "--device", "warp9"],
        "generate-missing-cuda": ["generate", "--model", model, "--prompt", "hi", "--device", "cuda:7"],
        "generate-missing-prompt-file": ["generate", "--model", model, "--prompt-file", root / "nope.txt"],
        "generate-directory-prompt-file": ["generate", "--model", model, "--chat-file", root],
        "generate-binary-prompt-file": ["generate", "--model", model, "--prompt-file", root / "latin1.txt"],
        "generate-empty-prompt-file": ["generate", "--model", model, "--chat-file", empty],
        "generate-system-without-chat": ["generate", "--model", model, "--prompt", "hi", "--system", "Be brief."],
        "generate-stream-and-json": ["generate", "--model", model, "--prompt", "hi", "--stream", "--json"],
        "generate-draft-flag-without-speculation": ["generate", "--model", model, "--prompt", "hi", "--no-speculation", "--no-tree"],
        "generate-two-prompts": ["generate", "--prompt", "hi", "--chat-file", empty],
        "distill-missing-prompts": ["distill", root / "nope.jsonl", "-o", root / "a.jsonl"],
        "distill-no-prompt-field": ["distill", no_prompts, "-o", root / "a.jsonl", "--model", model],
        "distill-zero-batch": ["distill", prompts, "-o", root / "a.jsonl", "--batch-size", "0"],
        "distill-resume-foreign-output": ["distill", prompts, "-o", no_prompts, "--model", model],
        "bench-unknown-method": ["bench", "--methods", "vanilla,medusa"],
        "bench-zero-chain-cap": ["bench", "--methods", "vanilla,sam-chain0-fixed"],
        "bench-missing-questions": ["bench", "--questions", root / "nope.jsonl"],
        "bench-missing-data": ["bench", "--data", root / "nope.jsonl"],
        "bench-sam-without-corpus": ["bench", "--questions", no_prompts, "--prompt-field", "answer"],
        "bench-missing-cuda": ["bench", "--model", model, "--methods", "vanilla", "--limit", "1", "--device", "cuda:7"],
        "profile-bad-dtype": ["profile", "--model", model, "--dtype", "int8"],
        "profile-missing-cuda": ["profile", "--model", model, "--device", "cuda:7"],
        "profile-zero-budget": ["profile", "--model", model, "--budget", "0"],
        "usage-missing-output": ["build", empty],
        "usage-unknown-command": ["compile"],
        "usage-bad-integer": ["generate", "--prompt", "x", "--max-new-tokens", "many"],
    }



@pytest.mark.parametrize(
    "case",
    [
        "build-missing-input", "build-missing-output-dir", "build-empty-input", "build-binary-input",
        "build-undetectable-jsonl", "build-missing-tokenizer", "build-tokenizer-not-a-model", "info-missing",
        "info-junk", "info-truncated", "info-directory", "generate-missing-model", "generate-not-a-model",
        "generate-corrupt-corpus", "generate-zero-tokens", "generate-bad-min-probability", "generate-bad-max-draft",
        "generate-bad-top-k", "generate-bad-fallback", "generate-bad-dtype", "generate-bad-device", "generate-missing-cuda",
        "generate-missing-prompt-file", "generate-directory-prompt-file", "generate-binary-prompt-file",
        "generate-empty-prompt-file", "generate-system-without-chat", "generate-stream-and-json",
        "generate-draft-flag-without-speculation", "generate-two-prompts", "distill-missing-prompts", "distill-no-prompt-field",
        "distill-zero-batch", "distill-resume-foreign-output",
        "bench-unknown-method", "bench-zero-chain-cap", "bench-missing-questions", "bench-missing-data", "bench-sam-without-corpus",
        "bench-missing-cuda", "profile-bad-dtype", "profile-missing-cuda", "profile-zero-budget",
        "usage-missing-output", "usage-unknown-command", "usage-bad-integer",
    ],
)
def test_bad_input_fails_with_one_line(capsys, tmp_path, tiny_model_dir, corpus, case) -> None:
    argv = _bad_inputs(tmp_path, tiny_model_dir, corpus)[case]
    code, _, err = run_cli(capsys, *argv)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("sam-decoding") and "error:" in lines[0]
    assert "Traceback" not in err


def test_profile_measures_caches_and_writes_the_profile_for_a_dtype(capsys, tmp_path, monkeypatch, tiny_model_dir) -> None:
    from sam_decoding.policy import CostProfile

    monkeypatch.setenv("SAM_DECODING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SAM_DECODING_COST_PROFILE_CACHE", "1")  # the suite turns the disk cache off
    out = tmp_path / "profile.json"
    argv = ["profile", "--model", tiny_model_dir, "--dtype", "bfloat16", "--device", "cpu", "--budget", "0.3", "--out", out]
    code, first, _ = run_cli(capsys, *argv)
    assert code == 0 and "measured now" in first
    assert CostProfile.load(out).seconds(4, 200) > 0
    assert len(list((tmp_path / "cache" / "cost_profiles").glob("*.json"))) == 1
    code, second, _ = run_cli(capsys, *argv)
    assert code == 0 and "from the cache" in second
    code, _, _ = run_cli(capsys, "profile", "--model", tiny_model_dir, "--budget", "0.3")
    assert code == 0
    # float32 and bfloat16 are different profiles: a second file in the cache.
    assert len(list((tmp_path / "cache" / "cost_profiles").glob("*.json"))) == 2


def test_every_command_has_help_with_examples(capsys) -> None:
    for command in ("build", "info", "generate", "distill", "bench"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0
        assert "examples:" in out and f"sam-decoding {command}" in out
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and all(name in out for name in ("build", "info", "generate", "distill", "bench"))


def test_generate_learns_from_its_answers_in_a_response_cache(capsys, tmp_path, tiny_model_dir) -> None:
    from sam_decoding import ResponseCache

    path = tmp_path / "answers.cache"
    common = ["generate", "--model", tiny_model_dir, "--chat", "The cat sat", "--max-new-tokens", "24", "--json"]
    runs = []
    for _ in range(2):
        code, out, err = run_cli(capsys, *common, "--response-cache", path)
        assert code == 0, err
        runs.append(json.loads(out))
    plain = json.loads(run_cli(capsys, *common, "--no-speculation")[1])
    assert runs[0]["new_token_ids"] == runs[1]["new_token_ids"] == plain["new_token_ids"]
    assert [run["response_cache"]["responses"] for run in runs] == [1, 2]
    answer = plain["new_token_ids"]
    cached = [response.tolist() for response in ResponseCache(path=path).responses()]
    # Each answer is recorded whole, the tokens of the run's last step included.
    assert cached == [answer, answer]
    # The second answer is drafted from the first: fewer steps for the same tokens.
    assert runs[1]["stats"]["steps"] < runs[0]["stats"]["steps"]


def test_generate_refuses_a_bad_response_cache_and_leaves_it_unchanged(capsys, tmp_path, tiny_model_dir) -> None:
    from sam_decoding import ResponseCache

    damaged = tmp_path / "damaged.cache"
    damaged.write_bytes(b"SAMRESP\0" + b"\1" * 40)
    # Refused before the model is loaded (this model does not exist).
    code, _, err = run_cli(capsys, "generate", "--model", tmp_path / "no-model", "--response-cache", damaged, "--prompt", "hi")
    assert code == 1 and "--response-cache" in err and "damaged.cache" in err and err.count("\n") == 1
    assert damaged.read_bytes() == b"SAMRESP\0" + b"\1" * 40
    foreign = tmp_path / "foreign.cache"
    cache = ResponseCache(100, tokenizer_fingerprint="vocab32000-sha256:0123456789abcdef")
    cache.record([5, 6, 7])
    cache.save(foreign)
    saved = foreign.read_bytes()
    code, _, err = run_cli(capsys, "generate", "--model", tiny_model_dir, "--response-cache", foreign, "--prompt", "hi")
    assert code == 1 and "vocab32000-sha256:0123456789abcdef" in err and "vocab49152-" in err
    assert foreign.read_bytes() == saved
    code, _, err = run_cli(capsys, "generate", "--response-cache-tokens", "10", "--prompt", "hi")
    assert code == 1 and "needs --response-cache" in err
    code, _, err = run_cli(capsys, "generate", "--response-cache", foreign, "--no-speculation", "--prompt", "hi")
    assert code == 1 and "no use with --no-speculation" in err
