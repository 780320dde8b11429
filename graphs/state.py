"""The graph's state: plain, serializable data that a checkpointer stores, never a model or a cache.

The models and their KV caches live in the run's context (``graphs.context``), so a checkpoint holds
only text and numbers, and a resumed run (in another process, say) reopens the cursors from the text.
"""

from __future__ import annotations

from typing import Annotated, Any, NotRequired

from langchain_core.messages import AIMessage, AnyMessage
from langgraph.graph.message import add_messages

# typing_extensions' TypedDict: pydantic builds JSON schemas only from it on Python < 3.12, and a LangGraph
# server (Studio) builds the graph's input and output forms from these classes with pydantic.
from typing_extensions import TypedDict

from mentorcollab_langchain.backends.base import ChatMessage, Confidence, Piece
from mentorcollab_langchain.engine.state import CollabState, Decision, Divergence, Span, Stats

# What the cursors open on: the conversation in the engine's form, or a ready prompt.
Request = list[ChatMessage] | str


# An answer's tool choice, in the spellings ``bind_tools`` takes: "auto", "none", "any"/"required"/True, a
# tool's name, or OpenAI's {"type": "function", "function": {"name": ...}}.
ToolChoice = str | bool | dict[str, Any] | None


class MentorCollabInput(TypedDict, total=False):
    """What the graph takes: the conversation (``messages``) or a ready prompt (``prompt``), and, for a
    graph built with tools, this answer's ``tool_choice`` (``graphs.tools``)."""

    messages: Annotated[list[AnyMessage], add_messages]
    prompt: str
    tool_choice: ToolChoice


class MentorCollabOutput(TypedDict, total=False):
    """What the graph returns: the conversation with the answer appended, and the answer itself.
    ``tool_choice`` comes back cleared: a parent that shares the key forces a call for one answer only."""

    messages: Annotated[list[AnyMessage], add_messages]
    answer: AIMessage
    tool_choice: ToolChoice


class MentorCollabState(TypedDict):
    """The graph's whole state: plain, serializable data, never a model or a cache."""

    messages: Annotated[list[AnyMessage], add_messages]
    prompt: NotRequired[str | None]
    # The prompt the cursors open on, fixed at ``prepare`` so every later node (and a resume in another
    # process) rebuilds the same cursors, whatever happens to ``messages`` meanwhile.
    request: NotRequired[Request]
    # The answer's tool choice: as given until ``prepare`` reads it ("auto", "none", "required" or a
    # tool's name from then on), cleared by ``finish``.
    tool_choice: NotRequired[ToolChoice]
    collab: NotRequired[CollabState]
    answer_id: NotRequired[str]
    # The automatic verifier's verdict on the pending divergence, shown to the person (human verifier).
    machine_verdict: NotRequired[dict[str, Any] | None]
    # The decision attributes of the last node that ran (also set on its tracing span).
    step: NotRequired[dict[str, Any]]
    answer: NotRequired[AIMessage | None]


# The types a checkpoint of this graph holds beyond LangChain's messages (LangGraph's strict msgpack
# loading refuses any type not on its allowlist).
STATE_TYPES: frozenset[tuple[str, str]] = frozenset(
    (model.__module__, model.__name__) for model in (CollabState, Span, Piece, Confidence, Decision, Divergence, Stats)
)
