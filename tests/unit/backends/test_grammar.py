"""Grammars: what the chat model asks for compiles, a bad grammar is refused by name, objects are closed."""

from __future__ import annotations

import json

import pytest

from mentorcollab_langchain import ChatMentorCollab, ConfigError, ScriptedBackend
from mentorcollab_langchain.backends.grammar import check_grammar, closed_schema, json_grammar, with_special_tags
from mentorcollab_langchain.chat import tools
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.errors import InvalidSchemaError

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}, "precision": {"type": "integer"}},
            "required": ["expression"],
        },
    },
}


def test_objects_with_properties_are_closed_unless_they_say_otherwise() -> None:
    schema = {
        "type": "object",
        "properties": {
            "point": {"type": "object", "properties": {"x": {"type": "number"}}},
            "extra": {"type": "object", "properties": {}, "additionalProperties": True},
            "anything": {"type": "object"},
        },
    }
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["point"]["additionalProperties"] is False
    assert closed["properties"]["extra"]["additionalProperties"] is True  # said so: kept
    assert "additionalProperties" not in closed["properties"]["anything"]  # json_mode's any object stays open
    assert "additionalProperties" not in schema  # the caller's schema is not changed


def test_a_json_grammar_holds_the_text_around_the_value_and_compiles() -> None:
    grammar = json_grammar({"type": "integer"}, before="<n>", after="</n>")
    assert grammar.startswith('start: "<n>" value "</n>"\n')
    assert check_grammar(grammar) == grammar


@pytest.mark.parametrize("grammar", ["start: undefined_rule", "", "start: %json {not json}"])
def test_a_grammar_that_does_not_compile_is_refused_with_the_reason(grammar: str) -> None:
    with pytest.raises(InvalidSchemaError, match="grammar"):
        check_grammar(grammar)
    with pytest.raises(ConfigError, match="grammar"):
        CollabConfig(grammar=grammar)


def test_a_forced_call_grammar_names_the_tool_and_its_parameters_only() -> None:
    grammar = tools.call_grammar("calculator", [CALCULATOR])
    assert grammar is not None
    body = json.loads(grammar.split("%json ", 1)[1])
    assert body["properties"]["name"] == {"const": "calculator"}
    assert body["properties"]["arguments"]["additionalProperties"] is False
    assert tools.call_grammar("auto", [CALCULATOR]) is None and tools.call_grammar(None, [CALCULATOR]) is None
    either = json.loads(tools.call_grammar("required", [CALCULATOR, {**CALCULATOR, "function": {
        **CALCULATOR["function"], "name": "other"}}]).split("%json ", 1)[1])
    assert [call["properties"]["name"]["const"] for call in either["anyOf"]] == ["calculator", "other"]


def test_structured_output_and_forced_calls_run_under_a_grammar_and_free_answers_do_not() -> None:
    generator = ScriptedBackend('{"expression": "2+2"}', name="generator")
    mentor = ScriptedBackend('{"expression": "2+2"}', name="mentor")
    model = ChatMentorCollab(generator=generator, mentor=mentor, probe_rate=0.0, max_tokens=8)
    model.invoke("hello")
    model.with_structured_output({"title": "Sum", **CALCULATOR["function"]["parameters"]}).invoke("2+2?")
    model.bind_tools([CALCULATOR], tool_choice="calculator").invoke("2+2?")
    free, structured, forced = generator.grammars
    assert free is None
    assert structured is not None and '"expression"' in structured and "<tool_call>" not in structured
    assert forced is not None and forced.startswith('start: "<tool_call>" "\\n" value "\\n" "</tool_call>"')
    assert mentor.grammars == generator.grammars  # both models decode under the same grammar


def test_a_tag_the_vocabulary_holds_as_a_special_token_may_be_written_either_way() -> None:
    grammar = json_grammar({"type": "integer"}, before="<tool_call>\n", after="\n</tool_call>")
    qwen_like = with_special_tags(grammar, lambda tag: tag in {"<tool_call>", "</tool_call>"})
    either_open, either_close = '(<tool_call> | "<tool_call>")', '(</tool_call> | "</tool_call>")'
    assert qwen_like.startswith(f'start: {either_open} "\\n" value "\\n" {either_close}')
    assert with_special_tags(grammar, lambda tag: False) == grammar  # SmolLM2: spelled with ordinary tokens


def test_left_to_choose_the_answer_decodes_under_calls_or_prose_and_its_first_word_is_probed() -> None:
    generator = ScriptedBackend("It is 4 .", name="generator")
    mentor = ScriptedBackend("It is 4 .", name="mentor")
    model = ChatMentorCollab(generator=generator, mentor=mentor, probe_rate=0.0, probe_policy="random", max_tokens=8)
    chosen = model.bind_tools([CALCULATOR]).invoke("2+2?")
    assert generator.grammars[-1] == tools.choice_grammar([CALCULATOR])
    assert chosen.response_metadata["mentorcollab"]["stats"]["probes"] == 1  # the first word, and only it
    model.invoke("2+2?")  # without tools: no grammar, no probe at a rate of 0
    assert generator.grammars[-1] is None
    opted_out = model.model_copy(update={"probe_first_word": False})
    assert opted_out.bind_tools([CALCULATOR]).invoke("2+2?").response_metadata["mentorcollab"]["stats"]["probes"] == 0
