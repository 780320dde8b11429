"""Tools as text: how tools are offered to the models, checked, and a call asked for.

The engine speaks text, so tools travel as text too. The tool definitions go to each model with the
prompt (``backends.base.Conversation``) and are rendered by its chat template where it takes tools,
else as Qwen's own written instruction (``backends.prompts``). A model calls a tool by writing::

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "2 + 3"}}
    </tool_call>

which ``chat.tool_calls`` reads back, with the forms other model families write. ``answer_format`` decides
how an answer with tools is shaped, for the chat model and the graph alike: a forced call starts the
answer itself (``forced_prefix``) and decodes under the call's grammar (``call_grammar``); an answer
left to choose decodes under calls-or-prose (``choice_grammar``) and has its first word probed. A tool
history (an ``AIMessage`` with ``tool_calls``, a ``ToolMessage``) goes to each model's chat template as
native tool turns (``chat.messages``), written in the same ``<tool_call>`` form where a template does not
take them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.utils.function_calling import convert_to_openai_tool

from mentorcollab_langchain.backends.grammar import json_grammar, json_rule, literals
from mentorcollab_langchain.backends.prompts import TOOL_CALL_CLOSE, TOOL_CALL_OPEN
from mentorcollab_langchain.errors import InvalidToolError

REQUIRED_INSTRUCTION = "You must call one of these functions now."
NAMED_INSTRUCTION = "You must call the function {name} now."


JSON_TYPES = frozenset({"string", "number", "integer", "boolean", "array", "object", "null"})
# The keys that give a dict tool its name in the formats LangChain converts (OpenAI, a titled JSON
# schema, OpenAI's wrapped form, Anthropic's input_schema form (with "name"), Bedrock's toolSpec).
NAMING_KEYS = ("name", "title", "function", "toolSpec")


def tool_name(tool: Mapping[str, Any]) -> str:
    return str(tool["function"]["name"])


def openai_tools(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """``tools`` in OpenAI's format, each checked: a name, and parameters that are a JSON-schema object.

    LangChain's conversion passes on a dict with a name and any ``parameters`` at all, and drops the
    type of a titled JSON schema that is not an object; a model shown ``"parameters": "nonsense"`` can
    only guess. A malformed tool is refused here, when it is bound, with an ``InvalidToolError`` that
    names the tool and the problem, rather than when a model answers.
    """
    formatted: list[dict[str, Any]] = []
    for position, tool in enumerate(tools):
        try:
            converted = convert_to_openai_tool(tool)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            if isinstance(tool, Mapping) and not any(key in tool for key in NAMING_KEYS):
                raise InvalidToolError(
                    f"tool {position} ({shown(tool)}) has no name: a dict tool needs a 'name' and JSON-schema "
                    "'parameters' (OpenAI's format), or is a JSON schema with a top-level 'title'"
                ) from None
            reason = f": {langchain_reason(error)}" if isinstance(tool, Mapping) or callable(tool) else ""
            raise InvalidToolError(
                f"tool {position} ({shown(tool)}) is not a tool{reason}; pass a LangChain tool, a function with a "
                "docstring, a pydantic class, or a dict with a 'name' and JSON-schema 'parameters'"
            ) from None
        function = converted.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        label = f"tool {name!r}" if isinstance(name, str) and name.strip() else f"tool {position} ({shown(tool)})"
        problem = function_problem(function, declared_parameters(tool, function), "parameters")
        if problem:
            raise InvalidToolError(f"{label}: {problem}")
        formatted.append(converted)
    # Two tools may share a name (LangChain's standard tests bind a pydantic class and its own JSON
    # schema together): a call names the tool, and either definition reads its arguments.
    return formatted


def declared_parameters(original: Any, function: Any) -> Any:
    """The parameters schema as the user wrote it: a titled JSON schema is its own parameters (LangChain's
    conversion keeps them only where they have ``properties``); otherwise the converted ``parameters``."""
    forms = set(NAMING_KEYS) - {"title"}
    if isinstance(original, Mapping) and "title" in original and not any(key in original for key in forms):
        rest = {key: value for key, value in original.items() if key not in ("title", "description")}
        return rest or None
    return function.get("parameters") if isinstance(function, Mapping) else None


def function_problem(function: Any, parameters: Any, where: str) -> str | None:
    """What is wrong with an OpenAI function definition (its ``parameters`` called ``where``), or None."""
    if not isinstance(function, Mapping):
        return (
            f"it is not a function definition (got {shown(function)}); OpenAI's built-in tools (web search, "
            "file search) cannot run here"
        )
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        return f"its name must be a non-empty string, got {name!r:.60}"
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        return f"its description must be text, got {type(description).__name__}"
    if parameters is None and "parameters" not in function:
        return None
    if not isinstance(parameters, Mapping):
        return (
            f"{where} must be a JSON-schema object (a dict such as {{'type': 'object', 'properties': {{...}}}}), "
            f"got {shown(parameters)}"
        )
    if parameters.get("type", "object") != "object":
        return (
            f"{where} must describe a JSON object (type 'object'), got type {parameters.get('type')!r}; "
            "put the value in a property of an object"
        )
    return schema_problem(parameters, where)


def schema_problem(schema: Any, where: str) -> str | None:
    """The first thing in a JSON schema that is not one (a path and the problem), or None.

    Checks the parts a model's answer is shaped by: types, ``properties``, ``required``, ``items``,
    the combinators and ``$defs``. A ``true``/``false`` schema is valid JSON schema and passes.
    """
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, Mapping):
        return f"{where} must be a JSON schema (a dict), got {shown(schema)}"
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not kinds or any(not isinstance(item, str) or item not in JSON_TYPES for item in kinds):
            return f"{where} has type {kind!r:.60}, not a JSON-schema type ({', '.join(sorted(JSON_TYPES))})"
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, Mapping):
            return f"{where}.properties must map each property name to a JSON schema, got {shown(properties)}"
        for key, value in properties.items():
            problem = schema_problem(value, f"{where}.properties.{key}")
            if problem:
                return problem
    required = schema.get("required")
    if required is not None and (
        not isinstance(required, (list, tuple)) or not all(isinstance(item, str) for item in required)
    ):
        return f"{where}.required must be a list of property names, got {shown(required)}"
    if "enum" in schema and not isinstance(schema["enum"], (list, tuple)):
        return f"{where}.enum must be a list of values, got {shown(schema['enum'])}"
    parts = [(key, schema[key]) for key in ("additionalProperties", "not") if key in schema]
    items = schema.get("items")
    if isinstance(items, list):  # the older tuple form
        parts += [(f"items[{i}]", item) for i, item in enumerate(items)]
    elif "items" in schema:
        parts.append(("items", items))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if key in schema:
            if not isinstance(schema[key], (list, tuple)):
                return f"{where}.{key} must be a list of JSON schemas, got {shown(schema[key])}"
            parts += [(f"{key}[{i}]", item) for i, item in enumerate(schema[key])]
    for key in ("$defs", "definitions"):
        if key in schema:
            if not isinstance(schema[key], Mapping):
                return f"{where}.{key} must map names to JSON schemas, got {shown(schema[key])}"
            parts += [(f"{key}.{name}", item) for name, item in schema[key].items()]
    for path, part in parts:
        problem = schema_problem(part, f"{where}.{path}")
        if problem:
            return problem
    return None


def shown(value: Any) -> str:
    """A short description of a bad value for an error message: its type and the start of its repr."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def langchain_reason(error: BaseException) -> str:
    """The sentence of a LangChain conversion error that says what is wrong (the last paragraph; the
    first ones repeat the whole object)."""
    paragraphs = [part.strip() for part in str(error).split("\n\n") if part.strip()]
    return (paragraphs[-1] if paragraphs else type(error).__name__).rstrip(".")


@dataclass(frozen=True)
class AnswerFormat:
    """How an answer is shaped before any model runs, decided once for the chat model and the graph alike.

    ``instruction`` is added to the system message, ``prefix`` starts the answer (the models continue
    from it), both models decode under ``grammar`` where the generator can, the answer ends at a ``stop``
    string, and ``probe_first_word`` asks the mentor at the first word, where a model left to choose
    decides between a call and prose.
    """

    instruction: str = ""
    prefix: str = ""
    grammar: str | None = None
    stop: tuple[str, ...] = ()
    probe_first_word: bool = False


FREE_ANSWER = AnswerFormat()


def answer_format(tool_choice: str | None, offered: Sequence[Mapping[str, Any]]) -> AnswerFormat:
    """The format of an answer offered ``offered`` tools (OpenAI's format) under a normalized ``tool_choice``.

    A forced call (``required`` or a tool's name) asks for itself, is started in the answer
    (``forced_prefix``), decodes under its call's grammar and ends at ``</tool_call>``; an answer left to
    choose (``auto``) decodes under calls-or-prose and has its first word probed; with no tools offered,
    or ``none``, the answer is free.
    """
    if not offered or tool_choice == "none":
        return FREE_ANSWER
    prefix = forced_prefix(tool_choice, offered)
    if not prefix:
        return AnswerFormat(grammar=choice_grammar(offered), probe_first_word=True)
    return AnswerFormat(
        instruction=tool_choice_instruction(tool_choice),
        prefix=prefix,
        grammar=call_grammar(tool_choice, offered),
        stop=(TOOL_CALL_CLOSE,),
    )


def tool_choice_instruction(tool_choice: str | None) -> str:
    """The system-message sentence that asks for a tool call, or "" when the model may choose."""
    if tool_choice == "required":
        return REQUIRED_INSTRUCTION
    if tool_choice not in (None, "auto", "none"):
        return NAMED_INSTRUCTION.format(name=tool_choice)
    return ""


def forced_prefix(tool_choice: str | None, tools: Sequence[Mapping[str, Any]] = ()) -> str:
    """The start of the answer that makes a forced tool call certain.

    The models continue from this text, so a forced call is a fact of the answer rather than a request
    that a small model may ignore. ``required`` opens the call and leaves the name to the model; a
    named tool gets its name and the opening of its arguments object, down to the first required
    parameter's key (``{"name": "f", "arguments": {"x": ``, with the opening quote where the value is a
    string), and a tool without parameters gets the whole call. The values are always the model's own.
    """
    if tool_choice == "required":
        return TOOL_CALL_OPEN + '\n{"name": "'
    if tool_choice in (None, "auto", "none"):
        return ""
    start = TOOL_CALL_OPEN + "\n" + json.dumps({"name": tool_choice}, ensure_ascii=False)[:-1] + ', "arguments": {'
    schema = next((tool["function"].get("parameters") or {} for tool in tools if tool_name(tool) == tool_choice), {})
    properties = schema.get("properties") or {}
    if not properties:
        return start + "}}"
    return start + _first_key(schema)


def call_grammar(tool_choice: str | None, tools: Sequence[Mapping[str, Any]]) -> str | None:
    """The grammar of a forced tool call's answer, or None when the model may choose (``auto``, ``none``).

    The answer is one ``<tool_call>`` block holding the named tool's call (``required``: any offered
    tool's), its arguments exactly the tool's parameters: even a 135M model then writes a call LangChain
    can parse, with values of the declared types and no keys copied from the schema.
    """
    if tool_choice in (None, "auto", "none"):
        return None
    chosen = [tool for tool in tools if tool_choice == "required" or tool_name(tool) == tool_choice]
    return json_grammar(_call_schema(chosen), before=TOOL_CALL_OPEN + "\n", after="\n" + TOOL_CALL_CLOSE)


def choice_grammar(tools: Sequence[Mapping[str, Any]]) -> str:
    """The grammar of an answer that may call the tools or not (``auto``): prose, or calls only.

    The first character decides. An answer that opens a call is one call of an offered tool with exactly
    its parameters, in a ``<tool_call>`` block, a fenced JSON block or bare JSON (the forms models write,
    all of which ``parse_tool_calls`` reads); the agent loop asks again for the next call. Any other answer
    is free text that cannot open with ``<``, ``{`` or a backtick, so no call can slip past the grammar. A
    call later in prose is still read, but not checked.
    """
    tagged = " ".join([*literals(TOOL_CALL_OPEN + "\n"), "value", *literals("\n" + TOOL_CALL_CLOSE)])
    return (
        f'start: call | prose\ncall: {tagged} | "```json\\n" value "\\n```" | value\n'
        "prose: PROSE?\nPROSE: /[^<{`](.|\\n)*/\n"
        f"value: {json_rule(_call_schema(tools))}\n"
    )


def _call_schema(tools: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call of any of ``tools``: its name, and arguments of its parameters."""
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool_name(tool)},
                "arguments": tool["function"].get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
        }
        for tool in tools
    ]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def json_prefix(schema: Mapping[str, Any] | None) -> str:
    """The start of a structured answer: ``{`` and, where the schema requires keys, the first one
    (with the opening quote where its value is a string)."""
    return "{" + _first_key(schema or {})


def _first_key(schema: Mapping[str, Any]) -> str:
    """The first required key of an object schema, and the opening quote where its value is a string."""
    properties = schema.get("properties") or {}
    required = [name for name in schema.get("required") or [] if name in properties]
    if not required:
        return ""
    first = properties[required[0]]
    opening = '"' if isinstance(first, Mapping) and first.get("type") == "string" else ""
    return json.dumps(required[0], ensure_ascii=False) + ": " + opening


def normalize_tool_choice(tool_choice: Any, names: Sequence[str]) -> str | None:
    """``auto``/``none``/``required``/a tool name, from the spellings LangChain users pass."""
    if tool_choice is None or tool_choice is False:
        return None
    if tool_choice is True or tool_choice == "any":
        return "required" if len(names) != 1 else names[0]
    if isinstance(tool_choice, Mapping):
        function = tool_choice.get("function")
        name = (function.get("name") if isinstance(function, Mapping) else None) or tool_choice.get("name")
        if not name:
            raise InvalidToolError(f"tool_choice {dict(tool_choice)!r} names no function")
        tool_choice = name
    if not isinstance(tool_choice, str):
        raise InvalidToolError(f"tool_choice must be a string, a bool or a dict, got {type(tool_choice).__name__}")
    if tool_choice in ("auto", "none"):
        return tool_choice
    if tool_choice == "required":
        return "required" if len(names) != 1 else names[0]
    if tool_choice not in names:
        raise InvalidToolError(
            f"tool_choice {tool_choice!r} is not one of the bound tools: {', '.join(names) or 'none'}"
        )
    return tool_choice


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]
