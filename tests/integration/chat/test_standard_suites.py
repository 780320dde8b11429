"""LangChain's standard test suites (``langchain-tests``, pinned) against ChatMentorCollab.

The unit suite builds the model without running it (fast). The integration suite runs real packaged
weights, the fastest real pair on a CPU: SmolLM2-135M-Instruct writes and Gemma-3-270M (a base model,
rendered with the plain-text prompt) is the mentor, with short answers. Capability flags say what the
class really supports; a test that these tiny models cannot pass honestly is a strict xfail that checks
the failure is the documented one (the list is in the README).

The suites skip what the capability flags say the class lacks; those skips are by design, so they do
not fail a CI=true run (``allow_skip``, tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import LLMResult
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from mentorcollab_langchain import ChatMentorCollab
from mentorcollab_langchain.models.registry import DEFAULT_MENTOR

pytestmark = pytest.mark.allow_skip(reason="the suites skip what the capability flags say the class lacks")

FAST_REAL_PAIR: dict[str, Any] = {
    "generator": "smollm2-135m-instruct",
    "mentor": "gemma3-270m",
    "probe_rate": 0.2,
    "segment_tokens": 8,
    "max_tokens": 32,
    "seed": 0,
}

# Tests that the fastest real pair cannot pass honestly. Greedy decoding is deterministic, so each fails
# the same way on every run: each is a strict xfail that counts only the documented failure (checked on
# the model's own answer or on the error it raised). A pass (XPASS) or any other failure fails the run at
# once. The features themselves are covered by tests/unit/chat/test_chat_model.py on scripted models.
NO_UNFORCED_TOOL_CALL = (
    "with the tool choice left to the model, SmolLM2-135M answers the weather question in prose instead of "
    "calling get_weather, and this fast pair's mentor (Gemma-3-270M, a base model), asked at that first word, "
    "writes prose too; prose is what the tools' grammar allows there, so no grammar can choose the call "
    "(forced calls pass: test_tool_calling; the default Qwen mentor opens the call: "
    "tests/integration/test_examples.py)"
)
# Structured output runs with the default mentor. With this pair's Gemma-3-270M base mentor, SmolLM2 loops
# inside the pydantic joke's setup string until the 32-token limit ('{"setup": "I'm a cat, I'm a cat, I'm
# a cat, ...'); the mentor, probed there, offers the way out ('joke", "punchline": "cat') and the verifier
# declines it at a score of 0.49. No grammar can end that loop: the schema gives the string no maxLength,
# any text is a valid string, and the repetition guard (one step three times in a row) neither sees a
# three-word cycle nor, stopping the answer, writes the punchline. The default Qwen mentor, probed at the
# same word, offers 'Why did the cat cross the road?",' and is adopted (score 0.81): the method ends the
# loop, as it is meant to.
STRUCTURED_OUTPUT_TESTS = frozenset({"test_structured_output", "test_structured_output_async"})
STRUCTURED_OUTPUT_PAIR = FAST_REAL_PAIR | {"mentor": DEFAULT_MENTOR}


class DocumentedFailure(Exception):
    """The standard test failed exactly as its xfail reason says."""


def documented_failure(reason: str) -> pytest.MarkDecorator:
    """Expected to fail, strictly, and only as documented: another error fails the test."""
    return pytest.mark.xfail(reason=reason, strict=True, raises=DocumentedFailure)


class Answers(BaseCallbackHandler):
    """The messages a chat model answered, in order."""

    def __init__(self) -> None:
        self.messages: list[BaseMessage] = []

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.messages.append(response.generations[0][0].message)  # type: ignore[attr-defined]


def record_answers(model: BaseChatModel) -> list[BaseMessage]:
    answers = Answers()
    model.callbacks = [answers]
    return answers.messages


@contextmanager
def failing_as_documented(reason: str, documented: Callable[[Exception], bool]) -> Iterator[None]:
    """Turn the standard test's failure into DocumentedFailure when ``documented`` recognises it; anything
    else (a pass included: then the strict xfail reports XPASS) propagates as it is."""
    try:
        yield
    except Exception as error:
        if documented(error):
            raise DocumentedFailure(reason) from error
        raise


def answered_in_prose(answers: list[BaseMessage]) -> Callable[[Exception], bool]:
    def documented(error: Exception) -> bool:
        first = answers[0] if answers else None
        return (
            isinstance(error, AssertionError) and isinstance(first, AIMessage)
            and not first.tool_calls and bool(first.text.strip())
        )

    return documented


class TestChatMentorCollabUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatMentorCollab

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # test_standard_params passes max_tokens and stop itself, next to these.
        return {key: value for key, value in FAST_REAL_PAIR.items() if key != "max_tokens"}

    @property
    def supports_model_override(self) -> bool:
        return False  # the two models are chosen when the chat model is built

    @property
    def supports_json_mode(self) -> bool:
        return True


@pytest.mark.slow
class TestChatMentorCollabIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatMentorCollab

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return FAST_REAL_PAIR

    @property
    def supports_model_override(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @pytest.fixture
    def model(self, request: Any) -> BaseChatModel:
        """The suite's model, with the default mentor for the structured-output tests (see
        ``STRUCTURED_OUTPUT_PAIR``)."""
        params = STRUCTURED_OUTPUT_PAIR if request.node.originalname in STRUCTURED_OUTPUT_TESTS else FAST_REAL_PAIR
        extra = getattr(request, "param", None) or {}
        return self.chat_model_class(**(self.standard_chat_model_params | params | extra))

    @documented_failure(NO_UNFORCED_TOOL_CALL)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        answers = record_answers(model)
        with failing_as_documented(NO_UNFORCED_TOOL_CALL, answered_in_prose(answers)):
            super().test_agent_loop(model)
