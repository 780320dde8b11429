"""The LangChain face: ``ChatMentorCollab`` and the answer assembly it shares with the LangGraph graph.

- ``model``: the chat model class and its LangChain overrides;
- ``settings``: its engine fields and per-call options, generated from ``CollabConfig``;
- ``messages``: LangChain messages as the engine's prompt;
- ``answer``: engine events as chunks, a finished run as an ``AIMessage`` (pure; the graph uses it too);
- ``bridge``: the worker thread and cancellation for the async paths;
- ``tools``, ``tool_calls`` and ``structured``: tools offered, calls read back, and structured output, as text
  (forced calls and structured answers under a grammar);
- ``reasoning``: a ``<think>`` block that opens the answer, taken out as reasoning;
- ``profile`` and ``remote``: the model's ``profile``, and a mentor behind an OpenAI-compatible server.
"""

from mentorcollab_langchain.chat.answer import answer_message, text_chunk
from mentorcollab_langchain.chat.messages import UnsupportedContentError, to_engine_messages
from mentorcollab_langchain.chat.model import ChatMentorCollab
from mentorcollab_langchain.chat.structured import StructuredOutputError

__all__ = [
    "ChatMentorCollab",
    "StructuredOutputError",
    "UnsupportedContentError",
    "answer_message",
    "text_chunk",
    "to_engine_messages",
]
