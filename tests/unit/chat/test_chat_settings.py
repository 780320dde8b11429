"""One source for every setting: each ``CollabConfig`` field reaches ``ChatMentorCollab`` as a documented
field and as a per-call option, under its chat name, with nothing listed here by hand."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from langchain_core.language_models import BaseChatModel

from mentorcollab_langchain import ChatMentorCollab, CollabConfig, ConfigError, ScriptedBackend
from mentorcollab_langchain.chat.settings import chat_setting_names, per_call_options


def another_value(name: str) -> Any:
    """A valid value of ``CollabConfig.<name>`` other than its default, found from the field's type."""
    info = CollabConfig.model_fields[name]
    default = info.get_default(call_default_factory=True)
    candidates: list[Any] = [getattr(CollabConfig.faithful(), name), *get_args(info.annotation)]
    if isinstance(default, bool):
        candidates.append(not default)
    elif isinstance(default, int | float):
        candidates += [default + 1, default / 2 + 0.25]
    elif default is None:
        candidates += [1, 'start: "yes" | "no"']
    elif isinstance(default, tuple):
        candidates.append(("END",))
    for value in candidates:
        if value == default:
            continue
        try:
            CollabConfig(**{name: value})
        except ConfigError:
            continue
        return value
    raise AssertionError(f"found no value for {name} other than its default; teach another_value its type")


@pytest.mark.parametrize("name", list(CollabConfig.model_fields))
def test_every_engine_setting_is_a_documented_field_and_a_per_call_option(name: str) -> None:
    chat_name = chat_setting_names()[name]
    field = ChatMentorCollab.model_fields[chat_name]
    assert CollabConfig.model_fields[name].description in (field.description or "")
    value = another_value(name)
    assert getattr(ChatMentorCollab(**{chat_name: value}).collab_config(), name) == value

    assert chat_name in per_call_options()
    model = ChatMentorCollab(
        generator=ScriptedBackend("a b c"), mentor=ScriptedBackend("x y z"), verifier="never-mentor"
    )
    assert getattr(model.collab_config(**{chat_name: value}), name) == value
    assert getattr(model.collab_config(), name) == getattr(CollabConfig(), name)  # the call changed nothing
    model.invoke("q", **{chat_name: value})  # a call takes it


def test_chat_defaults_are_the_engines() -> None:
    assert ChatMentorCollab().collab_config() == CollabConfig()


def test_every_field_of_the_chat_model_is_documented() -> None:
    own = set(ChatMentorCollab.model_fields) - set(BaseChatModel.model_fields)
    assert own >= set(chat_setting_names().values())
    assert [name for name in sorted(own) if not ChatMentorCollab.model_fields[name].description] == []


def test_langchain_standard_names_and_types() -> None:
    fields = ChatMentorCollab.model_fields
    assert "max_new_tokens" not in fields and fields["max_tokens"].default == CollabConfig().max_new_tokens
    assert fields["temperature"].default is None
    assert ChatMentorCollab(temperature=None).collab_config().temperature == 0.0
    assert fields["stop"].default is None and ChatMentorCollab(stop=["\n"]).collab_config().stop == ("\n",)
