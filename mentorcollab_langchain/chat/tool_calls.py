"""Reading tool calls back from an answer's text, in the forms model families are trained to write.

Qwen's ``<tool_call>`` blocks (``chat.tools`` says how calls are asked for), Llama 3's
``<|python_tag|>`` and bare JSON objects (also inside a ```json fence, ``parameters`` for
``arguments``), Mistral's ``[TOOL_CALLS]`` (a JSON list, or ``name[ARGS]{...}``), and Gemma 3's
```tool_code fences holding Python calls (``name(arg=value)``, also inside ``print(...)`` or a list).
``call_start`` says where a call may begin, so a stream holds back only from there. Transformers' own
``parse_response`` reads an answer by the tokenizer's ``response_schema``, which none of the packaged
tokenizers carries, so the forms are read here.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import InvalidToolCall, ToolCall
from langchain_core.utils.json import parse_partial_json

from mentorcollab_langchain.chat.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, new_tool_call_id

PYTHON_TAG = "<|python_tag|>"  # Llama 3.1+: a call to the end of the message
MISTRAL_TAG = "[TOOL_CALLS]"  # Mistral: the calls to the end of the message
_END_TOKENS = ("<|eom_id|>", "<|eot_id|>")

_TAGGED_CALL = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|\Z)", re.DOTALL)
_TO_END_CALLS = re.compile(r"(" + re.escape(PYTHON_TAG) + "|" + re.escape(MISTRAL_TAG) + r")(.*)\Z", re.DOTALL)
_MISTRAL_NAMED = re.compile(r"\s*([\w.-]+)(?:\[CALL_ID\]\w+)?\[ARGS\]")
GEMMA_FENCE = "```tool_code"  # Gemma 3: Python calls in a fenced block
_GEMMA_BLOCK = re.compile(re.escape(GEMMA_FENCE) + r"[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
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


def _python_calls(body: str) -> list[tuple[str, dict[str, Any]] | str]:
    """The calls in a Gemma ```tool_code block, each ``(name, args)`` or what keeps it from being read.

    Gemma writes Python: ``get_weather(city="Paris")``, one call a line, or wrapped in ``print(...)``, or
    a list of calls. Arguments must be named, with literal values (``ast.literal_eval``); a positional
    argument cannot be matched to a parameter here, and an expression would have to be run.
    """
    try:
        statements = ast.parse(body.strip()).body
    except SyntaxError as error:
        return [f"not Python calls ({error.msg})"]
    expressions: list[ast.expr] = []
    for statement in statements:
        if not isinstance(statement, ast.Expr):
            return [f"not a call: {ast.unparse(statement)!r:.60}"]
        value = statement.value
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "print" and len(value.args) == 1:
            value = value.args[0]
        expressions.extend(value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value])
    return [_python_call(expression) for expression in expressions]


def _python_call(expression: ast.expr) -> tuple[str, dict[str, Any]] | str:
    if not isinstance(expression, ast.Call):
        return f"not a call: {ast.unparse(expression)!r:.60}"
    name = ast.unparse(expression.func)
    if expression.args or any(keyword.arg is None for keyword in expression.keywords):
        return f"{name}: arguments must be named (name=value)"
    try:
        return name, {str(keyword.arg): ast.literal_eval(keyword.value) for keyword in expression.keywords}
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return f"{name}: an argument's value is not a Python literal"


def parse_tool_calls(
    text: str, names: Sequence[str], *, first_only: bool = False
) -> tuple[str, list[ToolCall], list[InvalidToolCall]]:
    """Read tool calls out of a model's answer.

    Returns the text that is left once the calls are taken out (stripped), the calls whose name is a
    bound tool and whose arguments are a JSON object, and ``invalid_tool_calls`` for marked calls
    (``<tool_call>``, ``<|python_tag|>``, ``[TOOL_CALLS]``, ```tool_code) that are not (bad JSON or
    Python, unknown tool). An
    invalid call's ``args`` is its whole block as the model wrote it, tags included: LangChain reads a
    tool-call chunk's ``args`` as JSON, and a block never parses as a call's arguments, so the call
    stays invalid in a merged stream too. A JSON block cut off by the token limit is read as far as it
    goes, closing its open brackets. Unmarked JSON counts only where it is a call of a bound tool. With
    ``first_only`` (``parallel_tool_calls=False``) only the first call the model wrote is read, valid
    or not; the later ones are still taken out of the text.
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    cuts: list[tuple[int, int]] = []

    def read(call: tuple[str, dict[str, Any]] | str | None, block: str) -> None:
        """Record one marked call: ``(name, args)``, or what is wrong with it (``None``: not a call's shape)."""
        if first_only and (calls or invalid):
            return
        if isinstance(call, tuple) and call[0] in names:
            calls.append(ToolCall(type="tool_call", name=call[0], args=call[1], id=new_tool_call_id()))
            return
        if isinstance(call, tuple):
            name, error = call[0], f"unknown tool {call[0]!r}"
        else:
            name, error = None, call or "not a JSON object with a name and arguments"
        invalid.append(
            InvalidToolCall(type="invalid_tool_call", name=name, args=block, id=new_tool_call_id(), error=error)
        )

    for match in _TAGGED_CALL.finditer(text):
        cuts.append(match.span())
        read(_as_call(_partial_object(match.group(1).strip())), match.group(0))
    if not cuts:
        for match in _GEMMA_BLOCK.finditer(text):
            cuts.append(match.span())
            for call in _python_calls(match.group(1)):
                read(call, match.group(0))
    if not cuts:
        to_end = _TO_END_CALLS.search(text)
        if to_end:
            cuts.append(to_end.span())
            for data in _to_end_calls(to_end.group(1), to_end.group(2)):
                read(_as_call(data), to_end.group(0))

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
        if "json".startswith(after) or after.startswith("tool_code") or "tool_code".startswith(after):
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
