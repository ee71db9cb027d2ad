"""An OpenAI-compatible completions server on llama.cpp with sam-decoding drafting (standard library HTTP).

    python -m sam_decoding.llama_cpp.server --model model.gguf [--corpus code.sam] [--port 8080] [--threads 2]

Serves ``POST /v1/completions`` (``prompt``: a string) and ``POST /v1/chat/completions``
(``messages``, rendered with the GGUF file's chat template), ``max_tokens`` new tokens at most; and
``GET /v1/models``. Greedy unless the request sets ``temperature`` above 0; then it samples exactly
from llama-cpp-python's distribution for its ``temperature``, ``top_k``, ``top_p``, ``min_p``
(defaults 40, 0.95, 0.05) and ``seed`` (see :func:`sam_decoding.llama_cpp.generate`). Every answer is
recorded in a response cache that later requests draft from. One request at a time (a single
llama.cpp context).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sam_decoding.llama_cpp.sampling import SamplingSettings


class RequestError(ValueError):
    """A request the server refuses (answered with HTTP 400 and a one-line message)."""


def _setting(body: dict[str, Any], name: str, default: Any) -> Any:
    """A request field, ``default`` when absent or null; JSON integers as floats where the default is a float
    (``"temperature": 1``); anything else unchanged for the settings' own check."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


class Service:
    """The model, its drafter settings and the shared response cache."""

    def __init__(self, model: Path, corpus: Path | None, threads: int, context: int) -> None:
        import llama_cpp

        import sam_decoding.llama_cpp as sdl
        from sam_decoding import ResponseCache, StaticAutomaton

        self.llm = llama_cpp.Llama(model_path=str(model), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)
        self.name = model.name
        self.fingerprint = sdl.tokenizer_fingerprint(self.llm)
        self.corpus = StaticAutomaton.load(corpus) if corpus is not None else None
        if self.corpus is not None:
            self.corpus.check_tokenizer(self.fingerprint)
        self.responses = ResponseCache(tokenizer_fingerprint=self.fingerprint)
        self.template = self.llm.metadata.get("tokenizer.chat_template")
        self.lock = threading.Lock()

    def chat_prompt(self, messages: Any) -> str:
        if not isinstance(messages, list) or not messages or not all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in messages
        ):
            raise RequestError("messages must be a non-empty list of {role, content} strings")
        if not self.template:
            raise RequestError("this GGUF file has no chat template: use /v1/completions")
        import jinja2

        environment = jinja2.Environment(loader=jinja2.BaseLoader(), autoescape=False)
        return environment.from_string(self.template).render(messages=messages, add_generation_prompt=True)

    def complete(self, text: str, body: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        import sam_decoding.llama_cpp as sdl
        from sam_decoding import SamDrafter

        max_tokens = body.get("max_tokens", 256)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise RequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        try:
            sampling = SamplingSettings(
                temperature=_setting(body, "temperature", 0.0),
                top_k=_setting(body, "top_k", 40),
                top_p=_setting(body, "top_p", 0.95),
                min_p=_setting(body, "min_p", 0.05),
                seed=_setting(body, "seed", None),
            )
        except ValueError as error:
            raise RequestError(str(error)) from None
        tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        max_tokens = min(max_tokens, self.llm.n_ctx() - len(tokens))
        if max_tokens < 1:
            raise RequestError(f"the prompt ({len(tokens)} tokens) fills the context of {self.llm.n_ctx()} tokens")
        drafter = SamDrafter(self.corpus, use_tree=False, response_cache=self.responses, tokenizer_fingerprint=self.fingerprint)
        with self.lock:
            result = sdl.generate(
                self.llm, tokens, drafter=drafter, max_new_tokens=max_tokens, temperature=sampling.temperature,
                top_k=sampling.top_k, top_p=sampling.top_p, min_p=sampling.min_p, seed=sampling.seed,
            )
        new = result.new_tokens[:-1] if result.stopped_at_end else result.new_tokens
        usage = {
            "prompt_tokens": len(tokens),
            "completion_tokens": len(result.new_tokens),
            "total_tokens": len(tokens) + len(result.new_tokens),
            "tokens_per_evaluation": round(result.tokens_per_evaluation, 3),
        }
        return self.llm.detokenize(new).decode("utf-8", "replace"), usage, "stop" if result.stopped_at_end else "length"


def make_handler(service: Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": service.name, "object": "model", "owned_by": "local"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise RequestError("the request body must be a JSON object")
                if body.get("stream"):
                    raise RequestError("streaming responses are not served; send stream: false")
                created = int(time.time())
                if self.path.rstrip("/") == "/v1/completions":
                    prompt = body.get("prompt")
                    if not isinstance(prompt, str):
                        raise RequestError("prompt must be a string")
                    text, usage, reason = service.complete(prompt, body)
                    choice = {"index": 0, "text": text, "finish_reason": reason}
                    kind = "text_completion"
                elif self.path.rstrip("/") == "/v1/chat/completions":
                    text, usage, reason = service.complete(service.chat_prompt(body.get("messages")), body)
                    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}
                    kind = "chat.completion"
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                self._send(200, {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": kind, "created": created,
                                 "model": service.name, "choices": [choice], "usage": usage})
            except (RequestError, ValueError) as error:
                self._send(400, {"error": {"message": str(error).splitlines()[0] if str(error) else "bad request"}})

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sam_decoding.llama_cpp.server", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the GGUF model file")
    parser.add_argument("--corpus", type=Path, help="a corpus built with `sam-decoding build --model MODEL.gguf`")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads")
    parser.add_argument("--context", type=int, default=4096, help="context size, in tokens")
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"--model {args.model}: no such file")
    service = Service(args.model, args.corpus, args.threads, args.context)
    server = ThreadingHTTPServer((args.host, args.port), make_handler(service))
    print(f"serving {service.name} on http://{args.host}:{args.port}/v1 (sam-decoding drafting)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
