"""The answer as ``ChatMentorCollab`` gives it: the one place the graph borrows from the LangChain face.

The graph must answer exactly as the chat model does (the same content, metadata and streamed chunks),
so it uses the chat face's own message conversion and assembly instead of a copy of them. Every import
from that face is here, so that when the face moves only this module changes.
"""

from __future__ import annotations

from langchain_core.messages import AIMessage, AIMessageChunk

from mentorcollab_langchain.backends.base import Backend, Prompt
from mentorcollab_langchain.chat_model import answer_message as chat_answer_message
from mentorcollab_langchain.chat_model import stream_chunk, to_engine_messages
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.events import TextCommitted
from mentorcollab_langchain.engine.state import CollabState
from mentorcollab_langchain.verifiers import Verifier

__all__ = ["answer_message", "text_chunk", "to_engine_messages"]


def answer_message(
    state: CollabState,
    *,
    request: Prompt,
    config: CollabConfig,
    generator: Backend,
    mentor: Backend,
    verifier: Verifier,
    verifier_name: str | None = None,
    message_id: str | None = None,
) -> AIMessage:
    """The answer as the ``AIMessage`` that ``ChatMentorCollab`` gives for the same run (same content,
    ``response_metadata`` and ``usage_metadata``, from the chat model's own assembler)."""
    message = chat_answer_message(
        state,
        prompt=request,
        config=config,
        generator=generator,
        mentor=mentor,
        verifier=verifier,
        verifier_name=verifier_name or verifier.name,
    )
    message.id = message_id
    return message


def text_chunk(event: TextCommitted, answer_id: str) -> AIMessageChunk:
    """Committed text as the chunk ``ChatMentorCollab.stream`` gives (with its provenance entry)."""
    chunk = stream_chunk(event)
    chunk.id = answer_id
    return chunk
