"""Scoring a continuation on a remote server with a forced run: the grammar literal, and a server that refuses it.

The real llama.cpp server's side (one request, the in-process score) is tested in
``tests/integration/backends/test_remote_scoring.py``; here a scripted endpoint forces the one situation a
real server on this machine cannot produce: a server that answers HTTP 400 to the ``grammar`` field.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend, literal_grammar
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models import DEFAULT_MENTOR


@pytest.mark.parametrize("text", [' say "stop"', "a\\b", "two\nlines", "½ café 🙂", '"; root ::= [a-z]* "'])
def test_a_literal_grammar_accepts_exactly_its_text(text: str) -> None:
    grammar = literal_grammar(text)
    body = re.fullmatch(r'root ::= "(.*)"', grammar)
    assert body is not None, grammar
    assert '"' not in body[1] and "\n" not in body[1], "nothing inside can end the literal or the rule"
    unescaped = re.sub(r"\\u([0-9A-F]{4})|\\U([0-9A-F]{8})", lambda hit: chr(int(hit[1] or hit[2], 16)), body[1])
    assert unescaped == text


class RefusingServer:
    """Answers 400 to any request with a grammar; otherwise writes the scored text's next tokens at -1 nat each."""

    def __init__(self, backend: OpenAICompatibleBackend, prompt: str, whole: str) -> None:
        self.backend, self.prompt, self.whole = backend, prompt, whole
        self.requests: list[dict[str, Any]] = []

    def complete(self, prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:
        self.requests.append(options)
        if "grammar" in (options.get("extra") or {}):
            raise BackendError("http://server/v1/completions: HTTP 400: unknown field 'grammar'")
        at = len(prompt) - len(self.prompt)  # where in the response text this request begins
        tokens = self.backend.split_tokens(self.whole[at:])[:max_tokens]
        return {
            "text": "".join(tokens),
            "finish_reason": "length",
            "logprobs": {"tokens": tokens, "token_logprobs": [-1.0] * len(tokens)},
            "usage": {"prompt_tokens": self.backend.count_tokens(prompt), "completion_tokens": len(tokens)},
        }


def test_a_server_that_refuses_the_grammar_is_walked_and_not_asked_again() -> None:
    backend = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR)
    cursor = backend.open("Count: one two", style="raw")
    server = RefusingServer(backend, cursor.prompt, " three four five")
    backend.complete = server.complete  # type: ignore[method-assign]
    score = cursor.score_continuation("", " three four five")
    assert score.tokens == 3 and score.logprob == pytest.approx(-3.0)
    assert not backend.forces_text
    assert "grammar" in server.requests[0]["extra"], "it was asked once"
    assert all("grammar" not in (request.get("extra") or {}) for request in server.requests[1:])

    server.requests.clear()
    cursor.score_continuation("", " three four")
    assert server.requests and all("grammar" not in (request.get("extra") or {}) for request in server.requests)


def test_other_server_errors_are_not_taken_for_a_refused_grammar() -> None:
    backend = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR)
    cursor = backend.open("Count: one two", style="raw")

    def failing(prompt: str, max_tokens: int, **options: Any) -> dict[str, Any]:
        raise BackendError("http://server/v1/completions: HTTP 503: overloaded (after 3 retries)")

    backend.complete = failing  # type: ignore[method-assign]
    with pytest.raises(BackendError, match="HTTP 503"):
        cursor.score_continuation("", " three")
    assert backend.forces_text, "a failure that says nothing about grammars changes nothing"
