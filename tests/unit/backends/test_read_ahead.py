"""The remote cursor's read-ahead, against a scripted completion endpoint that forces exact situations.

The same cursor runs against a real llama.cpp server in ``test_remote_mentor.py``; here a greedy
"server" that always continues one fixed token list lets the tests count requests and tokens exactly.
"""

from __future__ import annotations

from typing import Any

import pytest

from mentorcollab_langchain.backends.openai_compatible import (
    READ_AHEAD_LIMIT,
    WORD_CHUNK_TOKENS,
    OpenAICompatibleBackend,
    OpenAICompatibleCursor,
)
from mentorcollab_langchain.engine import CollabConfig, CollabState, collaborate
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models import DEFAULT_MENTOR

PROMPT = "Q: count.\nA:"
ANSWER = [" one", " two", " thr", "ee", " four", " five", " six", " sev", "en", " eight", " nine", " ten", "."]


class ScriptedServer:
    """Greedy continuation of ``PROMPT + "".join(ANSWER)`` then end-of-sequence; counts what it is asked."""

    model_name = "scripted@test"

    def __init__(self, answer: list[str] = ANSWER, finish_reason: str = "stop") -> None:
        self.answer = answer
        self.finish_reason = finish_reason
        self.requests: list[int] = []
        self.generated = 0

    def complete(self, prompt: str, max_tokens: int, **_: Any) -> dict[str, Any]:
        self.requests.append(max_tokens)
        written, position = "", 0
        while position < len(self.answer) and PROMPT + written != prompt:
            written += self.answer[position]
            position += 1
        assert PROMPT + written == prompt, f"asked at a text the script never writes: {prompt!r}"
        tokens = self.answer[position : position + max_tokens]
        self.generated += len(tokens)
        self.last_tokens = tokens
        finish = "length" if len(tokens) == max_tokens else self.finish_reason
        return {"text": "".join(tokens), "finish_reason": finish, "usage": {"completion_tokens": len(tokens)}}

    def count_tokens(self, text: str) -> int:
        return len(text.split())  # reading is not what these tests check

    def split_tokens(self, text: str) -> list[str]:
        assert text == "".join(self.last_tokens)
        return self.last_tokens


def test_a_model_writing_alone_reads_ahead_in_growing_requests() -> None:
    server = ScriptedServer()
    cursor = OpenAICompatibleCursor(server, PROMPT)  # type: ignore[arg-type]
    text, words, cost = "", [], 0
    while True:
        word = cursor.next_word(text, 8)
        cost += word.cost
        if not word.text:
            break
        words.append(word.text)
        text += word.text
        if word.eos:
            break
    assert text == "".join(ANSWER)
    assert words[2] == " three" and words[6] == " seven"
    assert len(server.requests) < len(words) / 2, server.requests  # not one round trip per word
    assert server.requests[0] == WORD_CHUNK_TOKENS and server.requests == sorted(server.requests)
    assert max(server.requests) <= READ_AHEAD_LIMIT
    assert cost == server.generated  # every generated token billed once, none twice


def test_text_that_goes_elsewhere_drops_the_read_ahead() -> None:
    server = ScriptedServer()
    cursor = OpenAICompatibleCursor(server, PROMPT)  # type: ignore[arg-type]
    first = cursor.next_word("", 8)
    assert first.text == " one" and first.cost == WORD_CHUNK_TOKENS  # read " two", " thr", "ee" too
    # Another model's words were committed: the cursor asks again, small, at the new text.
    second = cursor.next_word(" one two three four", 8)
    assert second.text == " five" and server.requests[-1] == WORD_CHUNK_TOKENS
    # A lookahead at the read-ahead's position uses it before asking for the rest.
    segment = cursor.generate(" one two three four five", 5)
    assert segment.text == " six seven eight nine" and segment.tokens == 5
    assert segment.cost == 5 - 3  # three of the five tokens were already read with " five"


def test_generate_cuts_stop_strings_but_bills_what_was_generated() -> None:
    server = ScriptedServer()
    cursor = OpenAICompatibleCursor(server, PROMPT)  # type: ignore[arg-type]
    piece = cursor.generate("", 8, stop=[" four"])
    assert piece.text == " one two three" and piece.tokens == 4 and not piece.eos
    assert piece.cost == 8


def test_end_of_sequence_is_reported_once_the_read_ahead_runs_out() -> None:
    server = ScriptedServer(answer=[" yes", "."])
    cursor = OpenAICompatibleCursor(server, PROMPT)  # type: ignore[arg-type]
    word = cursor.next_word("", 8)
    assert (word.text, word.eos) == (" yes.", True)
    assert len(server.requests) == 1


def test_a_server_that_writes_nothing_without_ending_is_a_clear_error() -> None:
    server = ScriptedServer(answer=[], finish_reason="length")
    cursor = OpenAICompatibleCursor(server, PROMPT)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="context window"):
        cursor.next_word("", 8)


def test_generated_text_splits_into_the_mentors_own_tokens() -> None:
    backend = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=DEFAULT_MENTOR)
    text = " She sold 48 clips, then 24.\n\nSo the answer is 72."
    tokens = backend.split_tokens(text)
    assert "".join(tokens) == text
    assert len(tokens) == len(backend.tokenizer.encode(text, add_special_tokens=False))
    assert tokens[:5] == [" She", " sold", " ", "4", "8"] and ".\n\n" in tokens


class ScriptedRemoteBackend:
    """A remote backend over the scripted server, for running the engine with a remote generator."""

    model_name = "scripted@test"

    def __init__(self, server: ScriptedServer) -> None:
        self.server = server

    def open(self, prompt: Any, style: str = "chat", sampling: Any = None) -> OpenAICompatibleCursor:
        return OpenAICompatibleCursor(self.server, PROMPT)  # type: ignore[arg-type]


def test_the_engine_with_a_remote_writer_counts_every_generated_token() -> None:
    server = ScriptedServer()
    state = CollabState()
    list(collaborate("count", ScriptedRemoteBackend(server), ScriptedRemoteBackend(ScriptedServer()),
                     config=CollabConfig(probe_policy="random", probe_rate=0.0, max_new_tokens=64), state=state))
    assert state.text == "".join(ANSWER) and state.finish_reason == "eos"
    assert state.stats.generator_tokens_generated == server.generated
    assert len(server.requests) <= 4
