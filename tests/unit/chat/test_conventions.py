"""LangChain's conventions: the profile, the overflow error, the standard parameters, usage details.

The overflow runs on a real (tiny, random) transformers model whose context is 256 tokens; the remote
mentor's settings are checked on the HTTP client the chat model builds, against a loopback server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from langchain_core.exceptions import ContextOverflowError
from langchain_core.load import dumps
from langchain_core.messages import AIMessageChunk

from mentorcollab_langchain import ChatMentorCollab, ConfigError, ContextTooLongError, ScriptedBackend
from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend
from mentorcollab_langchain.errors import BackendError
from tests.servers import serve_in_thread

SECRET = "sk-test-0123456789"


# -- profile ---------------------------------------------------------------------------------------


def test_the_profile_says_what_the_pair_supports_and_the_generators_context() -> None:
    model = ChatMentorCollab(backend="llama.cpp")
    profile = model.profile
    assert profile is not None
    assert profile["max_input_tokens"] == LlamaCppBackend("smollm2-135m-instruct").n_ctx == 4096
    assert profile["tool_calling"] and profile["tool_choice"] and profile["structured_output"]
    assert profile["text_inputs"] and not profile["image_inputs"] and not profile["audio_inputs"]
    assert profile["mid_conversation_system_messages"] is False  # they are gathered to the front
    assert profile["name"] == model.model_name


def test_the_profile_leaves_out_a_context_it_cannot_know_without_loading(tiny_byte_level_model: str) -> None:
    assert "max_input_tokens" not in ChatMentorCollab(generator=tiny_byte_level_model, backend="transformers").profile
    given = {"max_input_tokens": 512, "tool_calling": False}
    assert ChatMentorCollab(profile=given).profile == given  # a user's profile is kept as given


# -- context overflow ------------------------------------------------------------------------------


def test_a_prompt_past_the_generators_context_raises_contextoverflowerror(tiny_byte_level_model: str) -> None:
    model = ChatMentorCollab(generator=tiny_byte_level_model, mentor=ScriptedBackend("unused"), device="cpu",
                             dtype="float32", probe_rate=0.0, max_tokens=4)
    long_prompt = "apples and pears " * 200  # well past the tiny model's 256 tokens
    with pytest.raises(ContextOverflowError) as caught:
        model.invoke(long_prompt)
    assert isinstance(caught.value, ContextTooLongError)  # the package's own type, for callers catching it
    with pytest.raises(ContextOverflowError):
        list(model.stream(long_prompt))
    assert model.invoke("apples").content is not None  # a short prompt fits


# -- standard parameters ---------------------------------------------------------------------------


def test_model_names_the_generator() -> None:
    model = ChatMentorCollab(model="some/generator")
    assert model.generator == model.model == "some/generator"
    with pytest.raises(ConfigError, match="model= and generator="):
        ChatMentorCollab(model="a", generator="b")


def test_the_mentor_api_key_comes_from_the_environment_and_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MENTORCOLLAB_MENTOR_API_KEY", SECRET)
    model = ChatMentorCollab(mentor_base_url="http://127.0.0.1:9")
    assert model.mentor_api_key is not None and model.mentor_api_key.get_secret_value() == SECRET
    shown = [repr(model), str(model), model.model_dump_json(), dumps(model), str(model._identifying_params),
             str(model._get_ls_params())]
    assert not any(SECRET in text for text in shown)
    assert ChatMentorCollab(api_key="given").mentor_api_key.get_secret_value() == "given"  # api_key= is the alias
    monkeypatch.delenv("MENTORCOLLAB_MENTOR_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ChatMentorCollab().mentor_api_key is None


def test_a_bad_mentor_url_or_a_mentor_object_with_a_url_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="not an http"):
        ChatMentorCollab(base_url="localhost:8080")
    with pytest.raises(ConfigError, match="tokenizer"):
        ChatMentorCollab(mentor=ScriptedBackend("x"), mentor_base_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="timeout"):
        ChatMentorCollab(timeout=0)


@pytest.fixture
def failing_server() -> Iterator[tuple[str, list[str | None]]]:
    """A loopback server that answers every request with a 500, after 0.3 s, recording its Authorization."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.headers.get("Authorization"))
            time.sleep(0.3)
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    with serve_in_thread(Handler) as url:
        yield url, seen


def test_timeout_max_retries_and_the_key_reach_the_remote_mentors_requests(
    failing_server: tuple[str, list[str | None]],
) -> None:
    url, seen = failing_server
    model = ChatMentorCollab(base_url=url, api_key=SECRET, max_retries=2, timeout=5)
    client = model._backend("mentor").client  # what every mentor call of this model goes through
    with pytest.raises(BackendError, match="after 2 retries"):
        client.post("/v1/completions", {})
    assert seen == [f"Bearer {SECRET}"] * 3  # one request and two retries, each with the key
    impatient = ChatMentorCollab(base_url=url, timeout=0.05, max_retries=0)
    started = time.monotonic()
    with pytest.raises(BackendError, match="timeout"):
        impatient._backend("mentor").client.post("/v1/completions", {})
    assert time.monotonic() - started < 0.3  # gave up before the server answered


# -- usage -----------------------------------------------------------------------------------------


def test_usage_details_carry_the_mentors_tokens_and_add_up_over_the_stream() -> None:
    model = ChatMentorCollab(generator=ScriptedBackend("a b c d e f", name="g"),
                             mentor=ScriptedBackend("x y z w v u", name="m"), probe_rate=1.0, segment_tokens=2,
                             verifier="always-mentor")
    chunks: list[AIMessageChunk] = list(model.stream("Go."))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    stats = whole.response_metadata["mentorcollab"]["stats"]
    usage = whole.usage_metadata
    assert usage is not None and stats["mentor_tokens_generated"] > 0
    assert usage["output_token_details"] == {"mentor_written": stats["mentor_tokens_generated"]}
    assert usage["input_token_details"] == {"cache_read": 0, "mentor_read": stats["mentor_tokens_read"]}
    assert usage == model.invoke("Go.").usage_metadata
    twice = whole + whole  # two answers' usage (as a tracer adds them) adds the mentor's tokens too
    assert twice.usage_metadata["output_token_details"]["mentor_written"] == 2 * stats["mentor_tokens_generated"]
