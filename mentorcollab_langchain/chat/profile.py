"""The chat model's ``profile``: what LangChain code may ask of it before the first call.

LangChain reads ``model.profile`` to decide things without trying them: a summarizing middleware trims
the history to ``max_input_tokens``, an agent checks ``tool_calling``, ``with_structured_output``
callers check ``structured_output``. Every value here is what ``ChatMentorCollab`` really does:

- the context is the generator's, since it reads the whole prompt and writes every word (a mentor with
  a smaller context fails only at probes, and a run degrades to the generator alone by config);
- it reads and writes text only (other content blocks fail with ``UnsupportedContentError``);
- tools, ``tool_choice`` and ``with_structured_output`` are supported on any pair (``tools.py``,
  ``structured.py``); tool calls stream as whole ``tool_call_chunks`` in the last chunk;
- system messages anywhere are gathered into the leading one (``messages.py``).

The context is given only where it is known without loading a model: llama.cpp's ``n_ctx`` (the
backend ``auto`` takes for packaged models on a CPU), or a backend object that says its context
(``n_ctx`` or ``context_length``). A transformers model's context is in its weights' config, which
building a chat model must not load; there ``max_input_tokens`` is absent, as ``ModelProfile``
allows for anything unknown.
"""

from __future__ import annotations

from langchain_core.language_models import ModelProfile

from mentorcollab_langchain.backends.base import Backend

# What every pair does, whatever the models.
_CAPABILITIES = ModelProfile(
    text_inputs=True,
    image_inputs=False,
    image_url_inputs=False,
    pdf_inputs=False,
    audio_inputs=False,
    video_inputs=False,
    image_tool_message=False,
    pdf_tool_message=False,
    text_outputs=True,
    image_outputs=False,
    audio_outputs=False,
    video_outputs=False,
    tool_calling=True,
    tool_choice=True,
    tool_call_streaming=True,
    structured_output=True,
    mid_conversation_system_messages=False,
    temperature=True,
    open_weights=True,
)


def context_size(backend: Backend) -> int | None:
    """The tokens ``backend``'s model can hold, where it is known without loading the model."""
    for name in ("n_ctx", "context_length"):
        value = getattr(backend, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def model_profile(name: str, generator: Backend) -> ModelProfile:
    """The profile of a pair named ``name`` whose generator is ``generator``."""
    profile = ModelProfile(name=name, **_CAPABILITIES)
    context = context_size(generator)
    if context is not None:
        profile["max_input_tokens"] = context
    return profile
