"""One source for every setting: the chat model's engine fields and per-call options come from ``CollabConfig``.

Each ``CollabConfig`` field becomes one field of ``ChatMentorCollab`` (same default, its description as
the field's documentation) and one per-call option (``model.invoke(x, probe_rate=0.5)``), so a new
engine setting reaches the chat model without an edit here. Where LangChain has a standard name or type
the chat model uses it: ``max_new_tokens`` is ``max_tokens``, ``temperature`` is ``float | None`` and
``stop`` is ``list[str] | None`` (``None`` meaning the engine's default). Values are validated in one
place, ``CollabConfig``: when the model is built, and for each call with that call's options.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from langchain_core.language_models import BaseChatModel
from pydantic import Field, create_model

from mentorcollab_langchain.engine import CollabConfig

# LangChain's standard names for engine settings; every other setting keeps its engine name.
_LANGCHAIN_NAMES = {"max_new_tokens": "max_tokens"}
# LangChain's standard types, where they differ from the engine's; ``None`` means the engine's default.
_LANGCHAIN_TYPES: dict[str, Any] = {"temperature": float | None, "stop": list[str] | None}

CHAT_NAMES: Mapping[str, str] = MappingProxyType(
    {name: _LANGCHAIN_NAMES.get(name, name) for name in CollabConfig.model_fields}
)
"""Each ``CollabConfig`` field's name on the chat model (as a field and as a per-call option)."""

# Per-call options that are not engine settings: what ``bind_tools`` and ``with_structured_output``
# bind, and LangChain's own ``stream`` switch.
CALL_ONLY_OPTIONS = frozenset({"tools", "tool_choice", "parallel_tool_calls", "response_format", "stream"})


def chat_setting_names() -> dict[str, str]:
    """``{CollabConfig field: chat-model name}`` for every engine setting."""
    return dict(CHAT_NAMES)


def per_call_options() -> frozenset[str]:
    """Every keyword a call takes (``stop`` also comes as LangChain's own ``stop`` argument)."""
    return frozenset(CHAT_NAMES.values()) | CALL_ONLY_OPTIONS


def _chat_field(name: str) -> tuple[Any, Any]:
    info = CollabConfig.model_fields[name]
    default = info.get_default(call_default_factory=True)
    description = info.description or ""
    if name in _LANGCHAIN_NAMES:
        description += f" (CollabConfig.{name})"
    if name in _LANGCHAIN_TYPES:
        return _LANGCHAIN_TYPES[name], Field(default=None, description=f"{description}; None means {default!r}")
    # No constraints here: CollabConfig validates, so a bad value fails with the engine's ConfigError.
    return info.annotation, Field(default=default, description=description)


EngineSettings = create_model(
    "EngineSettings",
    __base__=BaseChatModel,
    __doc__="A chat model's engine settings, one field per ``CollabConfig`` field (see ``chat.settings``).",
    __module__=__name__,
    **{CHAT_NAMES[name]: _chat_field(name) for name in CollabConfig.model_fields},
)


def to_config(values: Mapping[str, Any]) -> CollabConfig:
    """The ``CollabConfig`` for engine settings under their chat names (``None`` for a LangChain-typed one
    means the engine's default); raises ``ConfigError`` naming each bad value."""
    fields: dict[str, Any] = {}
    for name, chat_name in CHAT_NAMES.items():
        value = values[chat_name]
        if name in _LANGCHAIN_TYPES and value is None:
            continue
        fields[name] = value
    return CollabConfig(**fields)
