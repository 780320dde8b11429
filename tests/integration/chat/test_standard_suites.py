"""LangChain's standard test suites (``langchain-tests``, pinned) against ChatMentorCollab.

The unit suite builds the model without running it (fast). The integration suite runs real packaged
weights, the fastest real pair on a CPU: SmolLM2-135M-Instruct writes and Gemma-3-270M (a base model,
rendered with the plain-text prompt) is the mentor, with short answers; the tests where the answer's
shape is the model's own choice run with the default Qwen mentor (``DEFAULT_MENTOR_TESTS``). Capability
flags say what the class really supports, and no test is an xfail.

The suites skip what the capability flags say the class lacks; those skips are by design, so they do
not fail a CI=true run (``allow_skip``, tests/conftest.py).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
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

# The tests where the answer's shape is the model's choice run with the default mentor (Qwen2.5-Coder-1.5B)
# instead of this pair's base-model Gemma. That choice is the mentor's to make, and the method working as it
# is meant to:
# - test_agent_loop: with the tool choice left to the model, SmolLM2-135M answers the weather question in
#   prose, and Gemma, probed at that first word, writes prose too (prose is what the tools' grammar allows
#   there); the Qwen mentor opens the call, and the answer after the tool's result.
# - test_structured_output (the pydantic joke): under the schema's grammar SmolLM2 loops inside the setup
#   string until the 32-token limit ('{"setup": "I'm a cat, I'm a cat, ...'). Gemma, probed there, offers
#   the way out ('joke", "punchline": "cat') and the verifier declines it at 0.49; no grammar can end that
#   loop (the schema gives no maxLength, any text is a valid string). Qwen offers 'Why did the cat cross
#   the road?",' and is adopted (0.81).
DEFAULT_MENTOR_TESTS = frozenset({"test_agent_loop", "test_structured_output", "test_structured_output_async"})
DEFAULT_MENTOR_PAIR = FAST_REAL_PAIR | {"mentor": DEFAULT_MENTOR}


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
        """The suite's model, with the default mentor where the answer's shape is the model's choice (see
        ``DEFAULT_MENTOR_TESTS``)."""
        params = DEFAULT_MENTOR_PAIR if request.node.originalname in DEFAULT_MENTOR_TESTS else FAST_REAL_PAIR
        extra = getattr(request, "param", None) or {}
        return self.chat_model_class(**(self.standard_chat_model_params | params | extra))
