"""Several chat-model calls at once sharing one remote mentor (one ``OpenAICompatibleBackend``).

The mentor is a loopback HTTP server speaking OpenAI's ``/v1/completions`` whose "model" is a pure
function of the prompt text: each next token is drawn from a small vocabulary by a hash of everything
before it, with a log-probability from the same hash, and a logit bias forces a token as real servers
do. So a request's answer depends on nothing but what it sends: if concurrent calls mixed up each
other's read-ahead, prompts or answers anywhere in the shared backend, a call would answer differently
from the same call made alone. The generators are scripted, each story its own answer, so every call
diverges from the mentor, runs lookaheads and has the mentor score both segments (``mentor-margin``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from langchain_core.messages import AIMessage

from mentorcollab_langchain import ChatMentorCollab, ScriptedBackend
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.scripted import ScriptedCursor
from tests.servers import serve_in_thread

# The mentor's tokenizer (its chat template and the split of its text) is SmolLM2's, as the tiny test
# models wear it; these are single tokens of it, so the server's tokens are the local tokenizer's and
# scoring walks them exactly.
TOKENIZER = "smollm2-135m-instruct"
VOCABULARY = (" the", " cat", " dog", " sat", " ran", " on", " a", " mat", " and", " park", " sun", " moon", ",")


def _hashed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass
class HashModel:
    """The server's model: the next token and its log-probability, both functions of the text so far."""

    tokenizer: Any
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    delay: float = 0.003
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_token(self, text: str) -> tuple[str, float, dict[str, float]]:
        value = _hashed(text)
        token = VOCABULARY[value % len(VOCABULARY)]
        runner_up = VOCABULARY[(value // 7 + 1 + value % len(VOCABULARY)) % len(VOCABULARY)]
        logprob = -0.05 - (value % 97) / 100
        return token, logprob, {token: logprob, runner_up: logprob - 0.3 - (value % 5) / 10}

    def complete(self, payload: dict[str, Any]) -> dict[str, Any]:
        text, tokens, logprobs, tops = payload["prompt"], [], [], []
        forced = {int(key): value for key, value in (payload.get("logit_bias") or {}).items() if value > 0}
        for _ in range(int(payload["max_tokens"])):
            token, logprob, top = self.next_token(text)
            if forced and not tokens:  # the biased token is picked, its logprob reported unbiased
                token = self.tokenizer.decode(list(forced)[:1])
                logprob = -4.0 - (_hashed(text + token) % 50) / 10
            tokens.append(token)
            logprobs.append(logprob)
            tops.append(top)
            text += token
        choice: dict[str, Any] = {"text": "".join(tokens), "index": 0, "finish_reason": "length"}
        if payload.get("logprobs") is not None:
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops}
        return {"choices": [choice], "usage": {"completion_tokens": len(tokens)}}


@contextmanager
def hash_model_server(tokenizer: Any) -> Iterator[tuple[str, HashModel]]:
    """A loopback OpenAI-compatible completion server serving ``HashModel`` as the model "mentor"."""
    model = HashModel(tokenizer)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            with model.lock:
                model.requests += 1
                model.in_flight += 1
                model.most_in_flight = max(model.most_in_flight, model.in_flight)
            try:
                time.sleep(model.delay)  # long enough for concurrent calls to overlap at the server
                if self.path != "/v1/completions" or payload.get("model") != "mentor":
                    status, body = 404, {"error": f"no model {payload.get('model')!r} at {self.path}"}
                else:
                    status, body = 200, model.complete(payload)
            finally:
                with model.lock:
                    model.in_flight -= 1
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    with serve_in_thread(Handler) as url:
        yield url, model


class StoryGenerator:
    """A scripted generator whose answer depends on the story the prompt asks for."""

    model_name = "story-generator"

    def open(self, prompt: Any, style: str = "chat", sampling: Sampling = GREEDY) -> ScriptedCursor:
        story = int(prompt[-1]["content"].split()[-1].rstrip("."))
        answer = f"Story {story}: the cat sat on the mat and then it slept all day long in the warm sun."
        return ScriptedBackend(answer, confidence=[0.9, 0.5] * 20).open(prompt, style, sampling)


STORIES = 3
CALLS_PER_STORY = 2


def prompt(story: int) -> str:
    return f"Tell me story {story}."


@pytest.fixture(scope="module")
def mentor_server() -> Iterator[tuple[OpenAICompatibleBackend, HashModel]]:
    mentor = OpenAICompatibleBackend("http://127.0.0.1:9", model="mentor", tokenizer=TOKENIZER, api_key_env=None)
    with hash_model_server(mentor.tokenizer) as (url, model):
        yield OpenAICompatibleBackend(url, model="mentor", tokenizer=TOKENIZER, api_key_env=None), model


def chat(mentor: OpenAICompatibleBackend) -> ChatMentorCollab:
    return ChatMentorCollab(generator=StoryGenerator(), mentor=mentor, probe_rate=0.3, uncertainty_threshold=0.6,
                            segment_tokens=4, max_tokens=16, seed=3, verifier="mentor-margin")


def comparable(message: AIMessage) -> dict[str, Any]:
    """What a call answered, wall times aside."""
    record = dict(message.response_metadata["mentorcollab"])
    record["stats"] = {key: value for key, value in record["stats"].items() if key not in {"seconds", "wall_seconds"}}
    return {"content": message.content, "usage": message.usage_metadata, "record": record}


@pytest.mark.slow  # a few seconds: kept out of the fast set
def test_concurrent_ainvoke_calls_sharing_one_remote_mentor_answer_as_each_call_alone(mentor_server) -> None:
    mentor, model = mentor_server
    alone = {story: comparable(asyncio.run(chat(mentor).ainvoke(prompt(story)))) for story in range(STORIES)}
    records = [answer["record"] for answer in alone.values()]
    assert all(record["stats"]["divergences"] >= 1 for record in records), "every call should reach a lookahead"
    assert sum(record["stats"]["adoptions"] for record in records) >= 1  # the mentor's words do get in
    assert all(record["errors"] == [] for record in records), records[0]["errors"]
    assert len({answer["content"] for answer in alone.values()}) == STORIES

    async def together() -> list[AIMessage]:
        model.most_in_flight = 0
        shared = chat(mentor)  # one chat model, one mentor backend, one HTTP client, for every call
        calls = [shared.ainvoke(prompt(story)) for story in range(STORIES) for _ in range(CALLS_PER_STORY)]
        return await asyncio.gather(*calls)

    answers = asyncio.run(together())
    stories = [story for story in range(STORIES) for _ in range(CALLS_PER_STORY)]
    for story, answer in zip(stories, answers, strict=True):
        assert comparable(answer) == alone[story], f"story {story} answered differently when not alone"
    assert model.most_in_flight > 1, "the calls never overlapped at the server"


def test_sync_calls_from_threads_sharing_one_remote_mentor_answer_as_each_call_alone(mentor_server) -> None:
    """The same through ``invoke`` from several threads: the shared httpx client instead of the event loop's."""
    from concurrent.futures import ThreadPoolExecutor

    mentor, model = mentor_server
    alone = {story: comparable(chat(mentor).invoke(prompt(story))) for story in range(STORIES)}
    shared = chat(mentor)
    stories = [story for story in range(STORIES) for _ in range(CALLS_PER_STORY)]
    model.most_in_flight = 0
    with ThreadPoolExecutor(len(stories)) as pool:
        answers = list(pool.map(lambda story: shared.invoke(prompt(story)), stories))
    for story, answer in zip(stories, answers, strict=True):
        assert comparable(answer) == alone[story], f"story {story} answered differently when not alone"
    assert model.most_in_flight > 1, "the calls never overlapped at the server"
