"""MentorCollab for LangChain: a small local model writes, a large mentor guides it at sparse probes."""

from mentorcollab_langchain.backends import Backend, Conversation, Cursor, Sampling, ScriptedBackend, TransformersBackend
from mentorcollab_langchain.engine import (
    CollabConfig,
    CollabState,
    Decided,
    Decision,
    Finished,
    MentorFailed,
    Probed,
    Span,
    Stats,
    TextCommitted,
    collaborate,
    run_collaboration,
)
from mentorcollab_langchain.errors import (
    BackendError,
    ConfigError,
    ContextTooLongError,
    GenerationCancelled,
    MentorCollabError,
    ModelFileError,
    ModelNotInstalledError,
    UnknownModelError,
)
from mentorcollab_langchain.verifiers import (
    AlwaysMentor,
    CallableVerifier,
    DEFAULT_VERIFIER,
    NeverMentor,
    SelfConsultVerifier,
    Verdict,
    Verifier,
    VerifyRequest,
)

__all__ = [
    "AlwaysMentor",
    "Backend",
    "BackendError",
    "CallableVerifier",
    "CollabConfig",
    "CollabState",
    "ConfigError",
    "ContextTooLongError",
    "DEFAULT_VERIFIER",
    "Conversation",
    "Cursor",
    "Decided",
    "Decision",
    "Finished",
    "GenerationCancelled",
    "MentorCollabError",
    "MentorFailed",
    "ModelFileError",
    "ModelNotInstalledError",
    "NeverMentor",
    "Probed",
    "Sampling",
    "ScriptedBackend",
    "SelfConsultVerifier",
    "Span",
    "Stats",
    "TextCommitted",
    "TransformersBackend",
    "UnknownModelError",
    "Verdict",
    "Verifier",
    "VerifyRequest",
    "collaborate",
    "run_collaboration",
]

# The LangChain face (issue 3): appended so edits to the lines above stay independent.
from mentorcollab_langchain.chat_model import ChatMentorCollab, StructuredOutputError, UnsupportedContentError  # noqa: E402

__all__ += ["ChatMentorCollab", "StructuredOutputError", "UnsupportedContentError"]
