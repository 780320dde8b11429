"""LangChain's standard test suites (``langchain-tests``, pinned) against ChatMentorCollab.

The unit suite builds the model without running it (fast). The integration suite runs real packaged
weights, the fastest real pair on a CPU: SmolLM2-135M-Instruct writes and Gemma-3-270M (a base model,
rendered with the plain-text prompt) is the mentor, with short answers. Capability flags say what the
class really supports; a test that these tiny models cannot pass honestly is marked xfail with the
reason (the list is in the README).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from mentorcollab_langchain import ChatMentorCollab

FAST_REAL_PAIR: dict[str, Any] = {
    "generator": "smollm2-135m-instruct",
    "mentor": "gemma3-270m",
    "probe_rate": 0.2,
    "segment_tokens": 8,
    "max_tokens": 32,
    "seed": 0,
}

# Tests that the fastest real pair cannot pass honestly. They are not run (run=False): greedy decoding
# is deterministic, so each would fail the same way on every run and only cost CI minutes. The
# features themselves are covered by tests/unit/chat/test_chat_model.py on scripted models.
WRONG_TOOL_ARGUMENTS = (
    "SmolLM2-135M completes the forced call of magic_function but writes the schema's "
    '{"type": "integer"} as the argument instead of 3'
)
NO_UNFORCED_TOOL_CALL = (
    "with the tool choice left to the model, SmolLM2-135M answers the weather question in prose "
    "instead of calling get_weather (forced calls work: see test_tool_choice)"
)
NO_VALID_JOKE = (
    "SmolLM2-135M does not write a joke with both setup and punchline as JSON: it repeats one phrase "
    "inside the setup string until the token limit"
)


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

    @pytest.mark.xfail(reason=WRONG_TOOL_ARGUMENTS, run=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=WRONG_TOOL_ARGUMENTS, run=False)
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=NO_VALID_JOKE, run=False)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    def test_structured_output(self, model: BaseChatModel, schema_type: Any) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.xfail(reason=NO_VALID_JOKE, run=False)
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    async def test_structured_output_async(self, model: BaseChatModel, schema_type: Any) -> None:
        await super().test_structured_output_async(model, schema_type)

    @pytest.mark.xfail(reason=NO_VALID_JOKE, run=False)
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(reason=NO_VALID_JOKE, run=False)
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.xfail(reason=NO_UNFORCED_TOOL_CALL, run=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)
