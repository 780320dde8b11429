"""How text is produced: packaged models on llama.cpp, local transformers models, and a scripted model for unit
tests."""

from mentorcollab_langchain.backends.base import Backend, ChatMessage, Conversation, Cursor, Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.choose import make_backend
from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.scripted import ScriptedBackend
from mentorcollab_langchain.backends.transformers import TransformersBackend, load_model

__all__ = [
    "GREEDY",
    "Backend",
    "ChatMessage",
    "Conversation",
    "Cursor",
    "LlamaCppBackend",
    "Piece",
    "Prompt",
    "PromptStyle",
    "Sampling",
    "ScriptedBackend",
    "TransformersBackend",
    "load_model",
    "make_backend",
]
