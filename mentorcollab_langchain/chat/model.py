"""``ChatMentorCollab``: the method as a LangChain chat model, flat over the engine.

A small generator writes the answer; at sparse probes a mentor proposes its own next word, and on a
divergence a verifier picks one of the two lookahead segments (DESIGN.md). This class turns LangChain
messages into the engine's prompt (``messages.py``), runs ``engine.collaborate`` and turns its events
into chunks (``answer.py``); it never calls another runnable and never re-implements a step.

``_stream`` is the one path: ``invoke`` is the sum of the stream's chunks, and the async paths run the
same events in a worker thread (``bridge.py``), never on the event loop, stopping at the next model
call when the caller cancels. Engine settings are fields and per-call options generated from
``CollabConfig`` (``settings.py``); tools and structured output are in ``tools.py`` and ``structured.py``.

``temperature`` 0 (or unset) decodes greedily, as the paper does; above 0 both models sample, with
draws fixed by ``seed`` and the text, so a seeded call gives the same answer every time.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from mentorcollab_langchain.backends.base import Backend, Conversation, Prompt, require_backend, takes_grammar
from mentorcollab_langchain.chat import structured
from mentorcollab_langchain.chat import tools as tooling  # as: bind_tools' argument is called tools
from mentorcollab_langchain.chat.answer import PROVIDER, STREAM_KEY, AnswerStream, prompt_counts
from mentorcollab_langchain.chat.bridge import cancellable, events_in_thread
from mentorcollab_langchain.chat.messages import to_engine_messages
from mentorcollab_langchain.chat.profile import model_profile
from mentorcollab_langchain.chat.remote import RemoteMentorSettings
from mentorcollab_langchain.chat.settings import CHAT_NAMES, per_call_options, to_config
from mentorcollab_langchain.engine import CollabConfig, CollabState, Event, collaborate
from mentorcollab_langchain.engine.slots import REQUEST_SLOTS
from mentorcollab_langchain.errors import ConfigError, UnknownOptionError
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, DEFAULT_MENTOR
from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, Verifier, get_verifier

# LangChain's standard names for fields that have a more precise name here (``ChatOpenAI(model=...,
# base_url=..., api_key=...)`` code builds this model unchanged).
STANDARD_ALIASES = {"model": "generator", "base_url": "mentor_base_url", "api_key": "mentor_api_key"}
# Set by LangChain itself for tracing; not options of the model.
TRACING_KEYWORDS = frozenset({"ls_structured_output_format", "structured_output_format"})


@dataclass
class _Call:
    """One call, resolved before any model runs, and the run's state and prompt counts as it goes."""

    prompt: Prompt
    config: CollabConfig
    generator: Backend
    mentor: Backend
    verifier: Verifier
    answer: AnswerStream
    state: CollabState
    input_tokens: int = 0
    mentor_input_tokens: int = 0

    def events(self, cancel: threading.Event | None = None) -> Iterator[Event]:
        """Run the engine; with ``cancel``, each model call first checks that the caller is still there."""
        generator, mentor = self.generator, self.mentor
        if cancel is not None:
            generator, mentor = cancellable(generator, cancel), cancellable(mentor, cancel)
        yield from collaborate(
            self.prompt, generator, mentor, verifier=self.verifier, config=self.config, state=self.state
        )
        # Counted here, in the worker thread of an async call: counting may load a model.
        self.input_tokens, self.mentor_input_tokens = prompt_counts(
            self.state, prompt=self.prompt, style=self.config.prompt_style, generator=self.generator, mentor=self.mentor
        )

    def finish(self) -> list[AIMessageChunk]:
        """The rest of the stream, closed by the last chunk."""
        return self.answer.finish(
            self.state, input_tokens=self.input_tokens, mentor_input_tokens=self.mentor_input_tokens
        )


def _generation(chunk: AIMessageChunk) -> ChatGenerationChunk:
    return ChatGenerationChunk(message=chunk)


def _whole(result: ChatResult) -> ChatResult:
    """The summed stream as ``invoke``'s answer, less the per-chunk provenance entries (the record's
    ``spans`` hold the answer's provenance, merged)."""
    result.generations[0].message.response_metadata.pop(STREAM_KEY, None)
    return result


class ChatMentorCollab(RemoteMentorSettings):
    """A LangChain chat model where a small generator writes and a large mentor guides at sparse probes.

    Example:
        ```python
        from mentorcollab_langchain import ChatMentorCollab

        model = ChatMentorCollab(generator="smollm2-135m-instruct", mentor="qwen2.5-coder-1.5b-instruct",
                                 probe_rate=0.25, max_tokens=128)
        answer = model.invoke("What is 17 * 3?")
        answer.response_metadata["mentorcollab"]["spans"]   # which characters the mentor wrote
        ```

    Building the object loads nothing: each model loads on first use, once per process, and is shared
    by every instance naming the same model (and device and dtype). Calls share no mutable state, so
    one instance serves many threads or tasks at once.

    Key init args — the models:
        generator (alias ``model``): the model that writes: a packaged name, a Hugging Face id or
            folder, or a backend object.
        mentor: the model probed at sparse words; with ``mentor_base_url``, the name its chat template
            (tokenizer) comes from.
        verifier: who decides at a divergence: a name in ``NAMED_VERIFIERS`` or a verifier object.
        backend: ``auto``, ``llama.cpp`` or ``transformers``, for models named by a string.
        device, dtype: where and in which precision transformers models run.
        torch_compile: transformers models decode over a static cache with a compiled step.

    Key init args — a mentor behind an OpenAI-compatible server (vLLM, SGLang, llama.cpp server):
        mentor_base_url (alias ``base_url``): the server's URL; unset, the mentor runs in process.
        mentor_served_name: the name the server knows the mentor by (default: ``mentor``).
        mentor_api_key (alias ``api_key``): its key; read from ``MENTORCOLLAB_MENTOR_API_KEY``, else
            ``OPENAI_API_KEY``, when not given. A ``SecretStr``: never in repr, logs or serialization.
        timeout: seconds before one mentor request gives up.
        max_retries: retries of a failed mentor request (connection errors, 429, 5xx) before the call
            fails (or, by ``on_mentor_error``, the generator answers alone).

    Key init args — generation (each also a per-call option):
        max_tokens, temperature, stop, seed: LangChain's standard settings.
        probe_rate, segment_tokens, ...: every other ``CollabConfig`` setting, under its own name
            (see ``chat.settings``).
        streaming: ``invoke`` streams its chunks to callbacks as they come.

    ``profile`` says what the pair supports, with the generator's context as ``max_input_tokens``
    (``chat/profile.py``); a prompt longer than that context raises ``ContextTooLongError``, which is
    LangChain's ``ContextOverflowError``.
    ``response_metadata["mentorcollab"]`` holds the engine's record (text, provenance spans, decisions
    with both candidate segments, verifier score and choice, stats) and the names of the models;
    ``answer.py`` says what the chunks and ``usage_metadata`` hold.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="ignore", protected_namespaces=())

    generator: Any = Field(
        default=DEFAULT_GENERATOR,
        validation_alias=AliasChoices("generator", "model"),
        description="the model that writes: a packaged name, a Hugging Face id or folder, or a backend object",
    )
    mentor: Any = Field(
        default=DEFAULT_MENTOR,
        description="the model that guides at probes: a packaged name, a Hugging Face id or folder, or a backend "
        "object",
    )
    verifier: Any = Field(
        default=DEFAULT_VERIFIER,
        description=f"who decides at a divergence: a name in NAMED_VERIFIERS (default {DEFAULT_VERIFIER!r}) or a "
        "verifier object",
    )
    backend: Literal["auto", "llama.cpp", "transformers"] = Field(
        default="auto",
        description="how models named by a string run: auto takes llama.cpp in process for packaged models on the "
        "CPU (about three times faster there) and transformers otherwise (GPUs, Hugging Face ids, hidden states)",
    )
    device: str = Field(
        default="auto",
        description="where models run: auto (CUDA, else MPS, else the CPU), cpu, cuda, cuda:N or mps; llama.cpp "
        "runs on the CPU only",
    )
    dtype: str = Field(
        default="auto",
        description="the transformers weights' dtype: auto (bfloat16, float32 on MPS), float32, bfloat16 or float16; "
        "llama.cpp runs its GGUF weights as they are",
    )
    torch_compile: bool = Field(
        default=False,
        description="transformers models decode over a static cache of 4096 tokens with a torch.compile'd step "
        "(CUDA graphs on a GPU); the first step compiles, for a minute or more. auto then takes transformers",
    )
    streaming: bool = Field(
        default=False, description="LangChain's switch: invoke streams its chunks to callbacks as they come"
    )
    _backends: dict[str, Backend] = PrivateAttr(default_factory=dict)
    _backends_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(type(self).model_fields) - set(STANDARD_ALIASES))
        if unknown:
            raise ConfigError(f"ChatMentorCollab got unknown settings: {', '.join(unknown)}; see its fields")
        twice = [f"{alias}= and {name}=" for alias, name in STANDARD_ALIASES.items() if {alias, name} <= set(kwargs)]
        if twice:
            raise ConfigError(f"ChatMentorCollab got both {', '.join(twice)}; they name one setting, give one")
        try:
            super().__init__(**kwargs)
        except ValidationError as error:  # a field of the wrong type: say which, as every other bad setting does
            problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
            raise ConfigError(f"invalid ChatMentorCollab settings: {problems}") from None
        self.collab_config()  # a bad setting fails here, before any model loads
        for role in ("generator", "mentor"):
            if not isinstance(getattr(self, role), str):
                require_backend(role, getattr(self, role))
        self.check_remote_mentor(self.mentor)
        # An unknown name, a non-verifier, or a trained verifier made for another generator fails here.
        get_verifier(self.verifier, generator=self.generator)
        if self.profile is None:  # building a backend object loads nothing (see chat/profile.py)
            self.profile = model_profile(self.model_name, self._backend("generator"))


    # -- settings and names --------------------------------------------------------------------

    def collab_config(self, **options: Any) -> CollabConfig:
        """The engine settings a call with these per-call ``options`` runs with (``None`` options are unset)."""
        values = {name: getattr(self, name) for name in CHAT_NAMES.values()}
        return to_config(values | {name: value for name, value in options.items() if value is not None})

    def _backend(self, role: Literal["generator", "mentor"]) -> Backend:
        spec = getattr(self, role)
        if not isinstance(spec, str):
            return spec
        with self._backends_lock:
            if role not in self._backends:
                from mentorcollab_langchain.backends.choose import make_backend

                self._backends[role] = (
                    self.remote_mentor(spec)
                    if role == "mentor" and self.mentor_base_url is not None
                    else make_backend(
                        spec, self.backend, device=self.device, dtype=self.dtype, torch_compile=self.torch_compile
                    )
                )
            return self._backends[role]

    @staticmethod
    def _name_of(spec: Any) -> str:
        return spec if isinstance(spec, str) else str(spec.model_name)

    @property
    def generator_name(self) -> str:
        return self._name_of(self.generator)

    @property
    def mentor_name(self) -> str:
        return self._name_of(self.mentor)

    @property
    def verifier_name(self) -> str:
        return self.verifier if isinstance(self.verifier, str) else str(getattr(self.verifier, "name", "custom"))

    @property
    def model_name(self) -> str:
        """Both models, as LangChain's tracers and usage callbacks see this model."""
        return f"{self.generator_name}+{self.mentor_name}"

    @property
    def model(self) -> str:
        """The generator's name: ``model=`` names the generator, as it names the model of other chat models."""
        return self.generator_name

    @property
    def _llm_type(self) -> str:
        return "mentorcollab"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "generator": self.generator_name,
            "mentor": self.mentor_name,
            "verifier": self.verifier_name,
            **self.collab_config().model_dump(mode="json"),
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs["model"] if isinstance(kwargs.get("model"), str) else self.model_name,
            ls_model_type="chat",
            ls_temperature=float(kwargs.get("temperature") or self.temperature or 0.0),
            ls_max_tokens=int(kwargs.get("max_tokens") or self.max_tokens),
        )
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        params["ls_generator"] = self.generator_name  # type: ignore[typeddict-unknown-key]
        params["ls_mentor"] = self.mentor_name  # type: ignore[typeddict-unknown-key]
        return params

    # -- one call ------------------------------------------------------------------------------

    def _call(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Call:
        unknown = sorted(set(kwargs) - per_call_options() - TRACING_KEYWORDS)
        if unknown:
            hint = " (choose models with generator= and mentor= when building the model)" if "model" in unknown else ""
            raise UnknownOptionError(f"ChatMentorCollab got unknown call options: {', '.join(unknown)}{hint}")
        options = {name: kwargs.get(name) for name in CHAT_NAMES.values()}
        stops = list(stop if stop is not None else self.stop or [])

        offered = tooling.openai_tools(kwargs.get("tools") or [])  # bound tools pass again; per-call ones are new
        names = [tooling.tool_name(tool) for tool in offered]
        tool_choice = tooling.normalize_tool_choice(kwargs.get("tool_choice"), names) if offered else None
        if tool_choice == "none":
            offered, names = [], []
        answer_format = tooling.answer_format(tool_choice, offered)
        instructions = [answer_format.instruction]
        response_format = kwargs.get("response_format")
        if response_format:
            structured_format = structured.answer_format(response_format)
            instructions.append(structured_format.instruction)
            if not answer_format.prefix:  # a forced call is the answer; otherwise the answer is the object
                answer_format = structured_format
        chosen_by_caller = options.get("probe_first_word") is not None or "probe_first_word" in self.model_fields_set
        if answer_format.probe_first_word and not chosen_by_caller:
            options["probe_first_word"] = True
        options["stop"] = list(dict.fromkeys([*stops, *answer_format.stop]))
        generator, mentor = self._backend("generator"), self._backend("mentor")  # objects only: nothing loads
        if answer_format.grammar is not None and takes_grammar(generator):
            # Both models decode under the format's grammar; a generator that cannot (a remote one) still
            # gets the instruction and the started answer, and its answer is validated when read back.
            options["grammar"] = answer_format.grammar
        config = self.collab_config(**options)  # a bad option fails before any model loads
        engine_messages = to_engine_messages(messages, instructions)
        verifier = get_verifier(self.verifier, generator=generator)
        return _Call(
            prompt=Conversation(tuple(engine_messages), tuple(offered)) if offered else engine_messages,
            config=config,
            generator=generator,
            mentor=mentor,
            verifier=verifier,
            answer=AnswerStream(
                generator=self.generator_name,
                mentor=self.mentor_name,
                verifier=verifier.name,
                prefix=answer_format.prefix,
                tool_names=names,
                parallel_tool_calls=kwargs.get("parallel_tool_calls") is not False,
            ),
            state=CollabState(text=answer_format.prefix, emitted=len(answer_format.prefix)),
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _whole(generate_from_stream(self._stream(messages, stop, **kwargs)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return _whole(await agenerate_from_stream(self._astream(messages, stop, **kwargs)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        call = self._call(messages, stop, kwargs)
        with REQUEST_SLOTS.held():  # at most so many requests hold caches at once; the rest wait here
            events = call.events()
            try:
                for event in events:
                    for chunk in map(_generation, call.answer.feed(event)):
                        if run_manager:
                            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
            finally:
                events.close()  # a consumer that stops early ends the run and frees both caches
        for chunk in map(_generation, call.finish()):
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call = self._call(messages, stop, kwargs)
        async with REQUEST_SLOTS.held_async():  # wait on the loop, before any thread or cache exists
            events = events_in_thread(call.events)
            try:
                async for event in events:
                    for chunk in map(_generation, call.answer.feed(event)):
                        if run_manager:
                            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                        yield chunk
            finally:
                await events.aclose()  # a caller who cancels or stops reading stops the worker now
        for chunk in map(_generation, call.finish()):
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- tools and structured output -----------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: dict[str, Any] | str | bool | None = None,
        strict: bool | None = None,
        parallel_tool_calls: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools`` to the models (see ``chat/tools.py`` for how they are shown and read back).

        ``tool_choice``: ``None``/``"auto"`` lets the model decide, ``"none"`` hides the tools,
        ``"any"``/``"required"``/``True`` forces a call, a tool's name forces that tool. A forced call is
        started in the answer itself, so even a small generator completes a well-formed call.
        ``parallel_tool_calls=False`` keeps only the first call; ``strict`` is accepted for
        compatibility (arguments are parsed as JSON, and tools validate them when they run).
        """
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        formatted = tooling.openai_tools(tools)  # a malformed tool fails now, named (InvalidToolError)
        if tool_choice is not None:  # fail now on an unknown tool name
            tooling.normalize_tool_choice(tool_choice, [tooling.tool_name(tool) for tool in formatted])
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        method: structured.Method = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """A runnable that answers with an object of ``schema`` (pydantic class, TypedDict or JSON schema).

        ``json_schema`` (default) shows the schema in the system message and starts the answer with
        ``{`` and the first required key (the model writes every value); ``function_calling`` forces a
        call of a tool shaped like the schema; ``json_mode`` asks for JSON without showing the schema.
        Every answer is validated (pydantic classes with pydantic, others for their required keys); an
        invalid one raises ``StructuredOutputError`` carrying the raw text, or with ``include_raw=True``
        is returned as ``{"raw", "parsed": None, "parsing_error"}``. ``strict`` is accepted for
        compatibility; validation is always strict after the fact.
        """
        if kwargs:
            raise ConfigError(f"with_structured_output got unsupported arguments: {', '.join(sorted(kwargs))}")
        return structured.structured_output(self, schema, method=method, include_raw=include_raw, strict=strict)
