"""How text is produced: local transformers models, and a scripted model for unit tests."""

from mentorcollab_langchain.backends.base import Backend, ChatMessage, Cursor, Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.scripted import ScriptedBackend
from mentorcollab_langchain.backends.transformers import TransformersBackend, load_model

__all__ = [
    "Backend",
    "ChatMessage",
    "Cursor",
    "Piece",
    "Prompt",
    "PromptStyle",
    "ScriptedBackend",
    "TransformersBackend",
    "load_model",
]
