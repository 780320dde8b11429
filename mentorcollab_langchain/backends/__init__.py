"""How text is produced: local transformers models, and a scripted model for unit tests."""

from mentorcollab_langchain.backends.base import Backend, ChatMessage, Conversation, Cursor, Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.scripted import ScriptedBackend
from mentorcollab_langchain.backends.transformers import TransformersBackend, load_model

__all__ = [
    "GREEDY",
    "Backend",
    "ChatMessage",
    "Conversation",
    "Cursor",
    "Piece",
    "Prompt",
    "PromptStyle",
    "Sampling",
    "ScriptedBackend",
    "TransformersBackend",
    "load_model",
]
