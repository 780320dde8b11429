"""Structured output: ``with_structured_output`` for a chat model that speaks text.

The schema reaches the models as an instruction in the system message, and the chat model starts the
answer itself with ``{`` and the schema's first required key (``tools.json_prefix``), so even a small
generator writes JSON of the right shape; ``function_calling`` instead forces a call of a tool shaped like the
schema. The answer is read back and validated here, loudly: an invalid one raises
``StructuredOutputError`` with the raw text, rather than passing on a half-filled object. A schema that
is not one (no title, ``properties`` that is not a mapping, not an object) is refused before any model
runs, with an ``InvalidSchemaError`` naming the problem (``check_schema``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from operator import itemgetter
from typing import Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ValidationError

from mentorcollab_langchain.backends.grammar import json_grammar
from mentorcollab_langchain.chat import tool_calls, tools
from mentorcollab_langchain.errors import ConfigError, InvalidSchemaError, MentorCollabError

Method = Literal["json_schema", "function_calling", "json_mode"]

JSON_SCHEMA_INSTRUCTION = "Answer with one JSON object and nothing else. It must match this JSON schema:\n{schema}"
JSON_MODE_INSTRUCTION = "Answer with one JSON object and nothing else."


class StructuredOutputError(OutputParserException, MentorCollabError):
    """The model's answer is not valid for the requested schema; ``llm_output`` holds the raw text."""


def format_instruction(response_format: Mapping[str, Any]) -> str:
    """The system-message sentence that asks for ``response_format`` (``json_schema`` or ``json_object``)."""
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema", {})
        return JSON_SCHEMA_INSTRUCTION.format(schema=json.dumps(schema, ensure_ascii=False))
    if response_format.get("type") == "json_object":
        return JSON_MODE_INSTRUCTION
    raise ConfigError(f"unknown response_format type {response_format.get('type')!r}; use json_schema or json_object")


def answer_format(response_format: Mapping[str, Any]) -> tools.AnswerFormat:
    """How a structured answer is shaped: the instruction, the start the chat model writes into it (``{`` and
    the schema's first required key), and the grammar of one JSON object of the schema (``json_schema``) or
    of any JSON object (``json_object``), so the answer always parses and has exactly the schema's fields."""
    schema = (response_format.get("json_schema") or {}).get("schema")
    return tools.AnswerFormat(
        instruction=format_instruction(response_format),
        prefix=tools.json_prefix(schema),
        grammar=json_grammar(schema or {"type": "object"}),
    )


def _schema_name(schema: Any) -> str:
    return str(convert_to_openai_tool(schema)["function"]["name"])


def check_schema(schema: Any) -> None:
    """Refuse a schema no answer can be checked against, with an ``InvalidSchemaError`` naming the problem.

    LangChain's conversion passes on a titled dict whose ``properties`` is not a mapping, and keeps only
    the title of one that is not an object; the answer would then be parsed against nothing.
    """
    usage = (
        "with_structured_output takes a pydantic class, a TypedDict, or a JSON-schema dict of type 'object' with "
        "a top-level 'title'"
    )
    if schema is None or isinstance(schema, (str, bytes, int, float, list, tuple)):
        raise InvalidSchemaError(f"{usage}; got {tools.shown(schema)}")
    try:
        function = convert_to_openai_tool(schema)["function"]
        convert_to_json_schema(schema)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        if isinstance(schema, Mapping) and not any(key in schema for key in tools.NAMING_KEYS):
            raise InvalidSchemaError(
                f"the structured-output schema ({tools.shown(schema)}) has no top-level 'title'; a JSON-schema "
                "dict needs one, and it names the answer"
            ) from None
        raise InvalidSchemaError(
            f"the structured-output schema ({tools.shown(schema)}) is not usable: {tools.langchain_reason(error)}; "
            f"{usage}"
        ) from None
    problem = tools.function_problem(function, tools.declared_parameters(schema, function), "schema")
    if problem:
        raise InvalidSchemaError(f"the structured-output schema {function.get('name')!r}: {problem}")


def _validator(schema: Any) -> Callable[[Any], Any]:
    """Turns parsed JSON into the schema's type: a validated pydantic object, or a checked dict."""
    if isinstance(schema, type) and is_basemodel_subclass(schema):
        if hasattr(schema, "model_validate"):
            return schema.model_validate
        return schema.parse_obj  # pydantic.v1 models

    required = convert_to_json_schema(schema).get("required", [])

    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        missing = [key for key in required if key not in value]
        if missing:
            raise ValueError(f"missing required keys: {', '.join(missing)}")
        return value

    return check


def _parser(schema: Any, method: Method) -> Runnable[Any, Any]:
    validate = _validator(schema)
    name = _schema_name(schema)

    def parse(message: BaseMessage) -> Any:
        raw = message.text if isinstance(message, AIMessage) else str(message.content)
        try:
            if method == "function_calling":
                calls = [call for call in getattr(message, "tool_calls", []) if call["name"] == name]
                if not calls:
                    raise ValueError(f"the answer holds no call of {name}")
                data = calls[0]["args"]
            else:
                data = tool_calls.first_json_object(raw)
            return validate(data)
        except (ValueError, ValidationError, TypeError) as error:
            raise StructuredOutputError(
                f"the model's answer is not a valid {name}: {error}. Raw answer: {raw!r}", llm_output=raw
            ) from error

    return RunnableLambda(parse, name="MentorCollabStructuredOutput")


def structured_output(
    model: BaseChatModel,
    schema: dict[str, Any] | type,
    *,
    method: Method = "json_schema",
    include_raw: bool = False,
    strict: bool | None = None,
) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
    """``model`` answering with objects of ``schema``: see ``ChatMentorCollab.with_structured_output``."""
    if method not in ("json_schema", "function_calling", "json_mode"):
        raise ConfigError(f"unknown method {method!r}; use json_schema, function_calling or json_mode")
    check_schema(schema)
    tracing = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    if method == "function_calling":
        bound: Runnable[Any, Any] = model.bind_tools(
            [schema], tool_choice=_schema_name(schema), ls_structured_output_format=tracing
        )
    else:
        response_format: dict[str, Any] = {"type": "json_object"}
        if method == "json_schema":
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(schema), "schema": convert_to_json_schema(schema)},
            }
        bound = model.bind(response_format=response_format, ls_structured_output_format=tracing)
    parser = _parser(schema, method)
    if not include_raw:
        return bound | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    fallback = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parsed.with_fallbacks([fallback], exception_key="parsing_error")
