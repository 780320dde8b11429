"""Local models through transformers and torch, with a per-request KV cache that follows the text.

The cursor's token-level logic (the cache rule, the decode loop, sampling, scores) is ``backends.local``'s,
shared with the llama.cpp backend; this module loads the model and supplies the torch parts: the
tokenizer, a forward pass over a ``DynamicCache``, cropping it, hidden states, and the caches finished
requests leave for later ones (``HeldCaches``).

With ``torch_compile`` a request's cache is a ``StaticCache`` instead, allocated once at its full length,
and each one-token step runs the network's forward pass compiled by ``torch.compile`` (with CUDA graphs on
a GPU, where launching a small model's kernels one by one costs more than running them). Every cursor on
the model shares one compiled graph: the cache is an input to it, not a constant. Prompts, scored
continuations and hidden states still run eagerly, over the same cache.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mentorcollab_langchain.backends.base import Prompt, PromptStyle
from mentorcollab_langchain.backends.local import LoadOnce, LocalCursor, common_prefix_length
from mentorcollab_langchain.backends.prompts import render_chat, render_plain
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.words import response_tokenizer, whitespace_start_table
from mentorcollab_langchain.errors import ConfigError, ContextTooLongError
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, resolve_model

# End-of-turn markers that chat models emit to end an answer, even where the converted generation
# config names only one of them (Qwen's GGUF lists <|im_end|> but not <|endoftext|>).
_END_MARKERS = ("<|endoftext|>", "<|im_end|>", "<end_of_turn>", "<|eot_id|>", "</s>", "<eos>")

# How many finished requests' prompt caches a model keeps for later requests to take over.
HELD_CACHES = 4

# The tokens a static cache holds (``torch_compile``): its keys and values are allocated up front and a
# step attends over all of them, so this is the context a compiled request has.
STATIC_CACHE_TOKENS = 4096


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in {"cpu", "cuda", "mps"} and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bfloat16 where it is both faster and accurate (CUDA, and CPUs like ours, see MODELS.md).

    float16 is allowed when asked for but never chosen: it overflows in Gemma 3. No int8 path exists
    on purpose: dynamic int8 quantization ruins the mentor's answers.
    """
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.float32 if device.type == "mps" else torch.bfloat16
    if dtype not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return names[dtype]


class HeldCaches:
    """The prompt caches finished requests left on one model, for later requests to take over.

    A closed cursor leaves its cache cropped to its prompt's whole batches (``LocalCursor.reusable_ids``),
    and a new cursor takes the one of its own kind (dynamic, or static of its length) sharing the longest
    prefix with its prompt. A taken cache leaves the pool until its cursor closes, so no two requests ever
    write one cache. Each holds its prompt's keys and values on the model's device, so at most ``limit``
    are kept, the one left longest ago dropped first.

    Static caches come back even with nothing to offer, and a request sharing no prompt with any empties
    one (``emptied``) rather than allocating its own: the buffers of a model's static caches are then
    allocated once, and its compiled step keeps running over buffers it has seen (CUDA graphs are recorded
    per buffer address).
    """

    def __init__(self, limit: int = HELD_CACHES) -> None:
        self.limit = limit
        # (the ids a cache holds, the cache, its static length or None for a dynamic one), oldest first
        self._held: list[tuple[list[int], Any, int | None]] = []
        self._lock = threading.Lock()

    def take(self, prompt_ids: Sequence[int], static_length: int | None = None) -> tuple[list[int], Any] | None:
        """The held cache of ``static_length`` (None: a dynamic one) sharing the longest prefix with
        ``prompt_ids``, and the ids it holds; None if none shares."""
        with self._lock:
            shared = [
                common_prefix_length(ids, prompt_ids) if length == static_length else 0
                for ids, _, length in self._held
            ]
            if not shared or max(shared) == 0:
                return None
            ids, cache, _ = self._held.pop(shared.index(max(shared)))
            return ids, cache

    def emptied(self, static_length: int) -> Any | None:
        """The held static cache of ``static_length`` left longest ago, emptied; None if none is held."""
        with self._lock:
            found = next((index for index, held in enumerate(self._held) if held[2] == static_length), None)
            if found is None:
                return None
            _, cache, _ = self._held.pop(found)
        with torch.inference_mode():  # its tensors were made in inference mode
            cache.reset()
        return cache

    def give(self, ids: list[int], cache: Any, static_length: int | None = None) -> None:
        with self._lock:
            self._held.append((ids, cache, static_length))
            del self._held[: -self.limit]

    def clear(self) -> None:
        """Drop every held cache (their memory goes back to the device)."""
        with self._lock:
            self._held.clear()

    def __len__(self) -> int:
        return len(self._held)


@dataclass
class LoadedModel:
    """Weights and tokenizer facts shared by every cursor (and every backend) on the same model."""

    name: str
    network: Any
    tokenizer: Any
    device: torch.device
    whitespace_start: list[bool]
    eos_ids: frozenset[int]
    context_length: int
    # For answer text where the tokenizer adds a dummy prefix or strips a first space (``words``).
    response_tokenizer: Any = None
    held_caches: HeldCaches = field(default_factory=HeldCaches)
    _compiled_forward: Callable | None = None
    _compile_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def compiled_forward(self) -> Callable:
        """The network's forward pass under ``torch.compile``, made once per model. Compiling happens at its
        first call (a minute for the 135M generator on this CPU); CUDA graphs replay each step on a GPU."""
        with self._compile_lock:
            if self._compiled_forward is None:
                mode = "reduce-overhead" if self.device.type == "cuda" else "default"
                self._compiled_forward = torch.compile(self.network.forward, mode=mode)
            return self._compiled_forward


_LOADED: LoadOnce[tuple[str, str, str], LoadedModel] = LoadOnce()


def load_model(
    name: str, device: str = "auto", dtype: str = "auto", report: Callable[[str], None] = lambda message: None
) -> LoadedModel:
    """Load a model once per (name, device, dtype) in this process and share it; a request on a loaded
    model never waits for another model's first load."""
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    key = (name, str(torch_device), str(torch_dtype))
    return _LOADED.get(key, lambda: _load(name, torch_device, torch_dtype, report))


def _load(name: str, device: torch.device, dtype: torch.dtype, report: Callable[[str], None]) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, local = resolve_model(name, report)
    report(f"loading {name} on {device} as {str(dtype).removeprefix('torch.')}")
    # Never run code shipped with a model, and never unpickle weights: safetensors only.
    options = {"trust_remote_code": False, "local_files_only": local}
    tokenizer = AutoTokenizer.from_pretrained(location, **options)
    network = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True, **options)
    network.to(device).eval()
    eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = network.generation_config.eos_token_id
    eos_ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    eos_ids |= {
        tokenizer.convert_tokens_to_ids(marker) for marker in _END_MARKERS if marker in tokenizer.all_special_tokens
    }
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return LoadedModel(
        name=name,
        network=network,
        tokenizer=tokenizer,
        device=device,
        whitespace_start=whitespace_start_table(vocabulary),
        eos_ids=frozenset(eos_ids),
        context_length=int(getattr(network.config, "max_position_embeddings", 0) or 1 << 30),
        response_tokenizer=response_tokenizer(tokenizer),
    )


class TransformersBackend:
    """A local model (packaged name, Hugging Face id or folder) loaded lazily on first use.

    With ``prefix_cache`` (the default) a request takes over the prompt tokens a finished request on the
    same model left in its cache, as far as the two prompts agree (``HeldCaches``), exactly as the llama.cpp
    backend does: only whole prompt batches, so every logit is what a fresh read computes, bit for bit; the
    tokens taken over count in ``tokens_cached``, not ``tokens_read``. Turn it off to measure each request
    as if it ran alone.

    With ``torch_compile`` each request decodes over a static cache of ``static_cache_tokens`` (its context)
    with a compiled step (module docstring): on a GPU the way past per-kernel launch costs; the first step
    compiles, for a minute or more. Its logits are the static cache's arithmetic, not the dynamic one's, so
    a greedy answer may differ from the uncompiled backend's where two tokens nearly tie.
    """

    def __init__(
        self,
        model: str = DEFAULT_GENERATOR,
        *,
        device: str = "auto",
        dtype: str = "auto",
        prefix_cache: bool = True,
        torch_compile: bool = False,
        static_cache_tokens: int = STATIC_CACHE_TOKENS,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        pick_dtype(dtype, pick_device(device))  # fail now, not at first use, on a bad device or dtype
        if static_cache_tokens < 1:
            raise ConfigError(f"static_cache_tokens must be at least 1, not {static_cache_tokens}")
        self.model = model
        self.device = device
        self.dtype = dtype
        self.prefix_cache = prefix_cache
        self.torch_compile = torch_compile
        self.static_cache_tokens = static_cache_tokens
        self._report = report

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def loaded(self) -> LoadedModel:
        return load_model(self.model, self.device, self.dtype, self._report)

    def prompt_ids(self, prompt: Prompt, style: PromptStyle = "chat") -> list[int]:
        """Token ids of the rendered prompt, ending where the assistant's answer begins."""
        loaded = self.loaded
        if style == "chat" and loaded.has_chat_template:
            return loaded.tokenizer.encode(render_chat(loaded.tokenizer, prompt), add_special_tokens=False)
        # Plain text gets the tokenizer's own special tokens (Gemma needs its <bos>).
        return loaded.tokenizer.encode(render_plain(prompt, style), add_special_tokens=True)

    def open(
        self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY, grammar: str | None = None
    ) -> TransformersCursor:
        """A cursor after the rendered prompt; with ``grammar`` it writes only text the grammar accepts."""
        prompt_ids = self.prompt_ids(prompt, style)
        static_length = self.static_cache_tokens if self.torch_compile else None
        context, advice = request_context(self.loaded, static_length)
        if len(prompt_ids) >= context:
            raise ContextTooLongError(
                f"the prompt is {len(prompt_ids)} tokens for {self.model}, whose context holds {context}{advice}"
            )
        return TransformersCursor(
            self.loaded, prompt_ids, sampling, grammar, prefix_cache=self.prefix_cache, static_length=static_length
        )


def request_context(loaded: LoadedModel, static_length: int | None) -> tuple[int, str]:
    """The tokens a request's cache holds, and how to get more where a static cache is what limits it."""
    if static_length is None or static_length >= loaded.context_length:
        return loaded.context_length, ""
    return static_length, " (raise static_cache_tokens)"


class TransformersCursor(LocalCursor[LoadedModel]):
    """One request's KV cache on one model, moved by text (see ``backends.local``): a ``DynamicCache``, or
    with ``static_length`` a ``StaticCache`` of that many tokens whose one-token steps run compiled."""

    def __init__(
        self,
        loaded: LoadedModel,
        prompt_ids: list[int],
        sampling: Sampling = GREEDY,
        grammar: str | None = None,
        *,
        prefix_cache: bool = True,
        static_length: int | None = None,
    ) -> None:
        from transformers import DynamicCache, StaticCache

        context_length, self.context_advice = request_context(loaded, static_length)
        super().__init__(
            loaded,
            prompt_ids,
            end_ids=loaded.eos_ids,
            context_length=context_length,
            sampling=sampling,
            grammar=grammar,
        )
        config = loaded.network.config
        if static_length is None:
            self._new_cache = lambda: DynamicCache(config=config)
            self._step = loaded.network
        else:
            self._new_cache = lambda: StaticCache(config=config, max_cache_len=static_length)
            self._step = loaded.compiled_forward()
        self.static_length = static_length
        self._cache = self._new_cache()
        self._hidden: torch.Tensor | None = None  # the last fed position's hidden state, where it was asked for
        self.forward_calls = 0
        self.prefix_cache = prefix_cache
        taken = loaded.held_caches.take(prompt_ids, static_length) if prefix_cache else None
        if taken is not None:
            held_ids, self._cache = taken
            self.cached_ids = held_ids  # what the cache holds, so that cropping it removes the right count
            self.adopt_cache(common_prefix_length(held_ids, prompt_ids))
        elif static_length is not None and (emptied := loaded.held_caches.emptied(static_length)) is not None:
            self._cache = emptied

    def _encode(self, text: str) -> list[int]:
        if self._model.response_tokenizer is not None:
            return self._model.response_tokenizer.encode(text, add_special_tokens=False).ids
        return self._model.tokenizer.encode(text, add_special_tokens=False)

    def _decode_ids(self, ids: Sequence[int]) -> str:
        if self._model.response_tokenizer is not None:
            return self._model.response_tokenizer.decode(list(ids), skip_special_tokens=False)
        return self._model.tokenizer.decode(ids)

    def _grammar_tokenizer(self) -> Any:
        from llguidance.hf import from_tokenizer

        return from_tokenizer(
            self._model.tokenizer, n_vocab=self._vocabulary_size(), eos_token=sorted(self._model.eos_ids)
        )

    def _vocabulary_size(self) -> int:
        return int(self._model.network.get_output_embeddings().weight.shape[0])

    def _forward(self, ids: list[int], outputs: int, hidden: bool) -> np.ndarray:
        one_step = len(ids) == 1 and outputs == 1 and not hidden  # the shape a compiled step is made for
        with torch.inference_mode():
            output = (self._step if one_step else self._model.network)(
                input_ids=torch.tensor([ids], device=self._model.device),
                cache=self._cache,
                use_cache=True,
                logits_to_keep=outputs,
                output_hidden_states=hidden,
            )
        self.forward_calls += 1
        self._hidden = output.hidden_states[-1][0, -1].float() if hidden else None
        return output.logits[0].float().cpu().numpy()  # no copy on a CPU: the array shares the tensor's memory

    def _crop_cache(self, keep: int) -> int:
        try:
            if self._cache.is_croppable:  # a static sliding-window layer past its window would crop wrongly
                self._cache.crop(-(len(self.cached_ids) - keep))  # a negative count removes that many tokens
                return keep
        except (RuntimeError, ValueError):  # a dynamic one raises ValueError there, other layers RuntimeError
            pass
        # Layers past their window cannot roll back: start over from the text.
        if self.static_length is None:
            self._cache = self._new_cache()
        else:
            with torch.inference_mode():  # in place: its buffers stay where the compiled step has seen them
                self._cache.reset()
        return 0

    def next_token_logits(self, text: str) -> torch.Tensor:
        """Next-token logits after ``text`` as a tensor (used by tests to compare with a full recompute)."""
        return torch.from_numpy(super().next_token_logits(text))

    def hidden_state(self, text: str) -> list[float]:
        self._move_to(self.token_ids(text), hidden=True)
        assert self._hidden is not None
        return self._hidden.tolist()

    def close(self) -> None:
        """Leave the prompt's whole batches for a later request (``prefix_cache``), or free the cache (a static
        one goes back with nothing to offer, for a later request to empty and reuse)."""
        reusable = self.reusable_ids() if self.prefix_cache else []
        if reusable and self._crop_cache(len(reusable)) == len(reusable):
            self._model.held_caches.give(reusable, self._cache, self.static_length)
        elif self.static_length is not None:
            self._model.held_caches.give([], self._cache, self.static_length)
        self._cache = self._new_cache()
        super().close()
