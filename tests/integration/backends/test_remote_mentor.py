"""A local generator with the default mentor served by a real llama.cpp server, and its faults.

The server is started by these tests on 127.0.0.1 from the verified GGUF of the packaged mentor
(``llama-cpp-python[server]`` is installed by ``scripts/install.sh``). Faults are real too: the server
is killed mid-run, a port nobody listens on, and a loopback proxy that delays or answers 500 and 429.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.http_client import CircuitBreaker
from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
from mentorcollab_langchain.engine import CollabConfig, CollabState, MentorFailed, Probed, TextCommitted, collaborate
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models import DEFAULT_MENTOR, PACKAGED_MODELS, ensure_converted
from mentorcollab_langchain.serving import ModelServer, free_port, llama_server
from mentorcollab_langchain.verifiers import NeverMentor
from tests.conftest import GSM8K_NATALIA
from tests.servers import FaultPlan, fault_proxy, vllm_server

pytest.importorskip("llama_cpp", reason="llama-cpp-python[server] is installed by scripts/install.sh")
pytestmark = pytest.mark.slow

CONFIG = CollabConfig(probe_rate=0.5, segment_tokens=6, max_new_tokens=32, seed=4)


VLLM_PYTHON = os.environ.get("MENTORCOLLAB_VLLM_PYTHON")


@pytest.fixture(
    scope="module",
    params=[
        "llama.cpp",
        pytest.param(
            "vllm",
            marks=pytest.mark.skipif(
                not VLLM_PYTHON,
                reason="opt-in: scripts/install-vllm.sh, then MENTORCOLLAB_VLLM_PYTHON=.venv-vllm/bin/python",
            ),
        ),
    ],
)
def mentor_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    """The default mentor served by a real engine: llama.cpp always, vLLM when opted in."""
    log = tmp_path_factory.mktemp("logs") / f"{request.param}.log"
    if request.param == "vllm":
        with vllm_server(VLLM_PYTHON, str(ensure_converted(PACKAGED_MODELS[DEFAULT_MENTOR])), log) as server:
            yield server
    else:
        with llama_server(DEFAULT_MENTOR, log) as server:
            yield server


@pytest.fixture(scope="module")
def generator() -> TransformersBackend:
    return TransformersBackend("smollm2-135m-instruct")


def remote(url: str, **options) -> OpenAICompatibleBackend:
    # A generous timeout: a shared 2-core machine can be slow; the timeout test sets its own.
    return OpenAICompatibleBackend(url, model="mentor", tokenizer=DEFAULT_MENTOR, **({"timeout": 300.0} | options))


def run(
    generator: TransformersBackend, mentor: OpenAICompatibleBackend, config: CollabConfig = CONFIG
) -> tuple[CollabState, list]:
    state = CollabState()
    events = list(collaborate(GSM8K_NATALIA, generator, mentor, config=config, state=state))
    return state, events


def test_local_generator_with_remote_mentor(generator: TransformersBackend, mentor_server: ModelServer) -> None:
    state, events = run(generator, remote(mentor_server.url))
    assert state.stats.probes >= 1 and state.stats.mentor_errors == 0
    assert state.stats.mentor_tokens_generated >= state.stats.probes
    assert "".join(e.text for e in events if isinstance(e, TextCommitted)) == state.text
    assert any(isinstance(e, Probed) for e in events)


def test_the_reading_budget_holds_against_a_real_server(
    generator: TransformersBackend, mentor_server: ModelServer
) -> None:
    """The remote cursor foresees what each request makes the server read (``tokens_to_read``), so a probe
    that would pass ``max_mentor_tokens_read`` is not sent; the prompt is read ahead, since it fits."""
    mentor = remote(mentor_server.url)
    budget = mentor.open(GSM8K_NATALIA).tokens_to_read("") + 12
    config = CONFIG.model_copy(update={"probe_rate": 1.0, "max_mentor_tokens_read": budget})
    state = CollabState()
    list(collaborate(GSM8K_NATALIA, generator, mentor, verifier=NeverMentor(), config=config, state=state))
    assert state.stats.probes >= 2 and state.stats.mentor_errors == 0
    assert state.stats.mentor_tokens_read <= budget
    assert state.probing_stopped is not None and state.probing_stopped.startswith("mentor reading budget")


def test_remote_words_chain_into_the_greedy_continuation(mentor_server: ModelServer) -> None:
    cursor = remote(mentor_server.url).open(GSM8K_NATALIA)
    whole = cursor.generate("", 24).text
    text = ""
    for _ in range(6):
        word = cursor.next_word(text, 12)
        assert word.tokens >= 1 and word.cost >= 0
        text += word.text
    assert whole.startswith(text), (whole, text)
    assert len(text.split()) >= 4


def test_remote_label_logprobs_are_real_probabilities(mentor_server: ModelServer) -> None:
    cursor = remote(mentor_server.url).open("Answer with one letter. Which is a fruit? (A) apple (B) brick")
    logprob_a, logprob_b = cursor.label_logprobs("The answer is (", ["A", "B"])
    assert all(math.isfinite(value) and value <= 0.0 for value in (logprob_a, logprob_b))
    assert logprob_a > logprob_b


def test_mentor_killed_mid_run_the_answer_completes(generator: TransformersBackend, tmp_path: Path) -> None:
    with llama_server(DEFAULT_MENTOR, tmp_path / "mentor.log") as server:
        state = CollabState()
        text_at_kill = None
        mentor = remote(server.url, max_retries=1)
        for event in collaborate(GSM8K_NATALIA, generator, mentor, config=CONFIG, state=state):
            if isinstance(event, Probed) and text_at_kill is None:
                server.kill()
                text_at_kill = state.text
    assert text_at_kill is not None, "the run never probed the mentor"
    assert state.text.startswith(text_at_kill) and len(state.text) > len(text_at_kill)
    assert state.finish_reason in {"eos", "length"}
    assert state.stats.mentor_errors == 1 and "cannot reach" in state.errors[0]
    assert state.probing_stopped.startswith("mentor failed")


def test_mentor_unreachable_at_start(generator: TransformersBackend) -> None:
    began = time.monotonic()
    state, events = run(generator, remote(f"http://127.0.0.1:{free_port()}", max_retries=2))
    assert state.text and state.finish_reason in {"eos", "length"}
    assert [e for e in events if isinstance(e, MentorFailed)] and "cannot reach" in state.errors[0]
    assert state.stats.mentor_tokens_committed == 0
    assert time.monotonic() - began < 60


def test_mentor_slower_than_the_timeout(generator: TransformersBackend, mentor_server: ModelServer) -> None:
    plan = FaultPlan(delay=3.0)
    with fault_proxy(mentor_server.url, plan) as url:
        state, _ = run(generator, remote(url, timeout=1.0))
    assert state.text and state.stats.mentor_errors == 1
    assert "no answer within the timeout" in state.errors[0]
    assert plan.requests == 1, "a request that timed out is not retried"


def test_500_and_429_are_retried_then_succeed(generator: TransformersBackend, mentor_server: ModelServer) -> None:
    plan = FaultPlan(statuses=[500, 429, 503], retry_after="0")
    with fault_proxy(mentor_server.url, plan) as url:
        state, _ = run(generator, remote(url, max_retries=3))
    assert state.stats.mentor_errors == 0 and state.stats.probes >= 1
    assert plan.requests >= 4


def test_persistent_500s_fall_back_and_open_the_circuit(
    generator: TransformersBackend, mentor_server: ModelServer
) -> None:
    plan = FaultPlan(statuses=[500] * 50)
    breaker = CircuitBreaker(threshold=1, cooldown=60)
    with fault_proxy(mentor_server.url, plan) as url:
        mentor = remote(url, max_retries=2, breaker=breaker)
        state, _ = run(generator, mentor)
        assert state.text and "HTTP 500" in state.errors[0] and "after 2 retries" in state.errors[0]
        assert plan.requests == 3
        with pytest.raises(BackendError, match="circuit open"):
            mentor.open("hi").next_word("", 4)
        assert plan.requests == 3, "an open circuit does not touch the network"


def test_the_circuit_half_opens_for_one_trial_and_closes_when_it_succeeds(mentor_server: ModelServer) -> None:
    """After the cool-down exactly one call tries the server; the others are refused until it succeeds."""
    from concurrent.futures import ThreadPoolExecutor

    plan = FaultPlan(statuses=[500], delay=1.5)  # one failure, then every forward is slow
    breaker = CircuitBreaker(threshold=1, cooldown=1.0)
    with fault_proxy(mentor_server.url, plan) as url:
        mentor = remote(url, max_retries=0, breaker=breaker)
        with pytest.raises(BackendError, match="HTTP 500"):
            mentor.open("hi").next_word("", 2)
        with pytest.raises(BackendError, match="circuit open"):
            mentor.open("hi").next_word("", 2)
        assert plan.requests == 1
        time.sleep(1.1)

        def call(delay: float) -> str:
            time.sleep(delay)
            try:
                return mentor.open("hi").next_word("", 2).text
            except BackendError as error:
                return f"refused: {error}"

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(call, [0.0, 0.3, 0.3, 0.3]))  # three arrive while the trial is in flight
        assert not answers[0].startswith("refused") and all("circuit open" in answer for answer in answers[1:])
        assert plan.requests == 2, "only the trial may reach the server while the circuit is half-open"
        assert not mentor.open("hi").next_word("", 2).text.startswith("refused")  # closed again
        assert plan.requests == 3


def test_api_key_is_sent_but_never_shown(monkeypatch: pytest.MonkeyPatch, mentor_server: ModelServer) -> None:
    monkeypatch.setenv("MENTOR_KEY", "sk-test-secret")
    plan = FaultPlan(statuses=[401])
    with fault_proxy(mentor_server.url, plan) as url:
        mentor = remote(url, api_key_env="MENTOR_KEY")
        with pytest.raises(BackendError) as raised:
            mentor.open("hi").next_word("", 4)
    assert plan.authorizations == ["Bearer sk-test-secret"]
    assert "sk-test-secret" not in str(raised.value) and "sk-test-secret" not in repr(mentor.client)
    assert "HTTP 401" in str(raised.value) and plan.requests == 1, "a 401 is not retried"


def test_the_async_path_reaches_the_real_server_through_the_async_client(
    generator: TransformersBackend, mentor_server: ModelServer
) -> None:
    import asyncio

    from mentorcollab_langchain import ChatMentorCollab

    mentor = remote(mentor_server.url)
    calls: list[str] = []
    original = mentor.client.async_client

    def counted() -> Any:
        calls.append("async client")
        return original()

    mentor.client.async_client = counted  # type: ignore[method-assign]
    model = ChatMentorCollab(
        generator=generator, mentor=mentor, probe_rate=0.5, segment_tokens=6, max_tokens=32, seed=4
    )
    sync = model.invoke(GSM8K_NATALIA)
    assert calls == []
    through_loop = asyncio.run(model.ainvoke(GSM8K_NATALIA))
    assert calls == ["async client"], "one async client per request, reused for all its calls"
    assert through_loop.content == sync.content
    assert through_loop.response_metadata["mentorcollab"]["stats"]["probes"] >= 1
