"""Tool calls and structured output as text: how tools are asked for and read back.

The engine speaks text, so tools travel as text too. The tool definitions go to each model with the
prompt (``backends.base.Conversation``) and are rendered by its chat template where it takes tools,
else as Qwen's own written instruction (``backends.prompts``). A model calls a tool by writing::

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "2 + 3"}}
    </tool_call>

and ``parse_tool_calls`` reads that form back into LangChain tool calls, as well as the forms other
model families are trained to write: Llama 3's ``<|python_tag|>`` and bare JSON objects (also inside a
```json fence, ``parameters`` for ``arguments``), and Mistral's ``[TOOL_CALLS]`` (a JSON list, or
``name[ARGS]{...}``). A tool call in the history (an ``AIMessage`` with
``tool_calls``) is written in the same form, and a tool's result as a user turn in
``<tool_response>`` tags, which is exactly how Qwen's template renders the ``tool`` role.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.json import parse_partial_json

from mentorcollab_langchain.backends.grammar import json_grammar, json_rule, literals
from mentorcollab_langchain.errors import InvalidToolError

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"
PYTHON_TAG = "<|python_tag|>"  # Llama 3.1+: a call to the end of the message
MISTRAL_TAG = "[TOOL_CALLS]"  # Mistral: the calls to the end of the message
# Tokens that end a Llama message; a server or a template may leave them in the text.
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>")

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


def render_tool_call(name: str, args: Mapping[str, Any]) -> str:
    """A tool call from the history, written as the model itself would write it."""
    call = json.dumps({"name": name, "arguments": dict(args)}, ensure_ascii=False)
    return TOOL_CALL_OPEN + "\n" + call + "\n" + TOOL_CALL_CLOSE


def render_tool_response(content: str) -> str:
    return "<tool_response>\n" + content + "\n</tool_response>"


def new_tool_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


_TAGGED_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|\Z)", re.DOTALL)
_TO_END_CALLS = re.compile(r"(" + re.escape(PYTHON_TAG) + "|" + re.escape(MISTRAL_TAG) + r")(.*)\Z", re.DOTALL)
_MISTRAL_NAMED = re.compile(r"\s*([\w.-]+)(?:\[CALL_ID\]\w+)?\[ARGS\]")
_FENCE = re.compile(r"```(?:json)?\s*\n?(.*?)```", re.DOTALL)
_JSON_CALL_KEYS = ('"name"', '"type"', '"function"')


def _as_call(data: Any) -> tuple[str, dict[str, Any]] | None:
    """``(name, args)`` where ``data`` has the shape of a tool call, else ``None``. OpenAI's wrapped
    form (``{"type": "function", "function": {...}}``) is read too."""
    if isinstance(data, dict) and isinstance(data.get("function"), dict) and "name" not in data:
        data = data["function"]
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    for key in ("arguments", "parameters", "args"):
        if key in data:
            args = data[key]
            if isinstance(args, str):
                try:
                    args = json.loads(args)
                except json.JSONDecodeError:
                    return None
            return (data["name"], args) if isinstance(args, dict) else None
    return (data["name"], {}) if set(data) <= {"name", "type"} else None


def _json_values(text: str, openers: str = "{[") -> list[tuple[int, int, Any]]:
    """Every top-level JSON value opened by one of ``openers`` in ``text`` as ``(start, end, value)``."""
    decoder = json.JSONDecoder()
    found, index = [], _next_opener(text, 0, openers)
    while index >= 0:
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index = _next_opener(text, index + 1, openers)
            continue
        found.append((index, end, value))
        index = _next_opener(text, end, openers)
    return found


def _next_opener(text: str, start: int, openers: str) -> int:
    found = [index for index in (text.find(opener, start) for opener in openers) if index >= 0]
    return min(found, default=-1)


def _json_objects(text: str) -> list[tuple[int, int, Any]]:
    """Every top-level JSON object in ``text`` as ``(start, end, value)`` (objects inside lists too)."""
    return _json_values(text, "{")


def _partial_object(body: str) -> Any:
    """The first JSON object in ``body``; one cut off by the token limit is closed where it stops."""
    objects = _json_objects(body)
    if objects:
        return objects[0][2]
    if body.startswith("{"):
        try:
            return parse_partial_json(body)
        except Exception:  # noqa: BLE001 - any failure leaves the call invalid
            return None
    return None


def _to_end_calls(tag: str, body: str) -> list[Any]:
    """The call objects written after a Llama ``<|python_tag|>`` or Mistral ``[TOOL_CALLS]`` tag: JSON
    objects (separated by ``;`` in Llama's form) or a JSON list of them, or Mistral's ``name[ARGS]{...}``."""
    for token in _END_TOKENS:
        body = body.replace(token, "")
    body = body.strip()
    named = _MISTRAL_NAMED.match(body) if tag == MISTRAL_TAG else None
    if named:
        calls: list[Any] = []
        for part in re.split(r"(?=\[TOOL_CALLS\])", body):
            match = _MISTRAL_NAMED.match(part.removeprefix(MISTRAL_TAG))
            if match:
                arguments = _partial_object(part.removeprefix(MISTRAL_TAG)[match.end() :].strip())
                calls.append({"name": match.group(1), "arguments": arguments})
        return calls
    values = [value for _, _, value in _json_values(body)]
    if not values:
        return [_partial_object(body)]
    return [item for value in values for item in (value if isinstance(value, list) else [value])]


def parse_tool_calls(
    text: str, names: Sequence[str], *, first_only: bool = False
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Read tool calls out of a model's answer.

    Returns the text that is left once the calls are taken out (stripped), the calls whose name is a
    bound tool and whose arguments are a JSON object, and ``invalid_tool_calls`` for marked calls
    (``<tool_call>``, ``<|python_tag|>``, ``[TOOL_CALLS]``) that are not (bad JSON, unknown tool). An
    invalid call's ``args`` is its whole block as the model wrote it, tags included: LangChain reads a
    tool-call chunk's ``args`` as JSON, and a block never parses as a call's arguments, so the call
    stays invalid in a merged stream too. A block cut off by the token limit is read as far as it goes,
    closing its open brackets. Unmarked JSON counts only where it is a call of a bound tool. With
    ``first_only`` (``parallel_tool_calls=False``) only the first call the model wrote is read, valid
    or not; the later ones are still taken out of the text.
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    cuts: list[tuple[int, int]] = []

    def read(data: Any, block: str) -> None:
        if first_only and (calls or invalid):
            return
        call = _as_call(data)
        if call is not None and call[0] in names:
            calls.append(ToolCall(type="tool_call", name=call[0], args=call[1], id=new_tool_call_id()))
            return
        error = "not a JSON object with a name and arguments" if call is None else f"unknown tool {call[0]!r}"
        invalid.append(
            InvalidToolCall(
                type="invalid_tool_call", name=call[0] if call else None, args=block, id=new_tool_call_id(), error=error
            )
        )

    for match in _TAGGED_CALL.finditer(text):
        cuts.append(match.span())
        read(_partial_object(match.group(1).strip()), match.group(0))
    if not cuts:
        to_end = _TO_END_CALLS.search(text)
        if to_end:
            cuts.append(to_end.span())
            for data in _to_end_calls(to_end.group(1), to_end.group(2)):
                read(data, to_end.group(0))

    if not cuts:  # no marked calls: look for bare JSON calls, alone or in a list (also in ```json fences)
        for start, end, value in _json_values(text):
            found = [call for call in map(_as_call, value if isinstance(value, list) else [value]) if call]
            found = [call for call in found if call[0] in names]
            for name, args in found:
                if not (first_only and calls):
                    calls.append(ToolCall(type="tool_call", name=name, args=args, id=new_tool_call_id()))
            if found:
                cuts.append((start, end))

    rest = text
    for start, end in sorted(cuts, reverse=True):
        rest = rest[:start] + rest[end:]
    if cuts:
        rest = _FENCE.sub(lambda match: match.group(0) if match.group(1).strip() else "", rest)
    return rest.strip(), calls, invalid


def _json_call_start(text: str) -> bool:
    """Whether ``text`` (from a ``{``) may be, or begins, a JSON tool call: ``{"name"`` and the like."""
    body = text[1:].lstrip()
    return any(key.startswith(body) or body.startswith(key) for key in _JSON_CALL_KEYS)


def _may_begin_call(text: str) -> bool:
    """Whether a tool call may begin at the start of ``text`` (a marker, a fenced or bare JSON call), as
    far as the text goes: ``<tool`` may, ``<b>`` and ``{x}`` may not."""
    for marker in (TOOL_CALL_OPEN, PYTHON_TAG, MISTRAL_TAG):
        if marker.startswith(text) or text.startswith(marker):
            return True
    if text.startswith("```"):
        after = text[3:]
        if "json".startswith(after):
            return True
        after = after.removeprefix("json").lstrip()
        return not after or _json_call_start(after)
    return text.startswith("{") and _json_call_start(text)


def call_start(text: str) -> int | None:
    """Where in ``text`` a tool call may have begun (the first such place), or ``None``: a stream shows
    text up to there, and holds the rest until it is clearly prose or the answer ends."""
    for index, character in enumerate(text):
        if character in "<[{`" and _may_begin_call(text[index:]):
            return index
    return None


def first_json_object(text: str) -> Any:
    """The first JSON object in ``text`` (a structured answer), closing brackets cut off at the end."""
    objects = _json_objects(text)
    if objects:
        return objects[0][2]
    start = text.find("{")
    if start >= 0:
        try:
            value = parse_partial_json(text[start:])
        except Exception:  # noqa: BLE001
            value = None
        if isinstance(value, dict):
            return value
    raise ValueError("the answer holds no JSON object")
