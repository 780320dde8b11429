"""Packaged GGUF models in process on llama.cpp, with a per-request KV cache that follows the text.

On a CPU this is the fastest way to run the packaged models: llama.cpp decodes their quantized weights
directly, about three times faster than torch on the de-quantized ones (MODELS.md). The cursor's
token-level logic (the cache rule, the decode loop, sampling, scores) is ``backends.local``'s, shared
with the transformers backend, so both write the same text from the same logits.

The pieces, top to bottom:

- ``load_gguf``: one ``llama_model`` (the weights) per packaged model and process, from its
  sha256-verified GGUF, shared by every backend and cursor on that model;
- ``LlamaCppBackend``: renders the prompt (the model's chat template, through the project's
  transformers tokenizer for the packaged model, so both backends see the same prompt text) and opens
  cursors;
- ``shared_context``: one ``llama_context`` per model (and context shape) whose KV cache holds a
  sequence per concurrent request, with the scheduler that decodes their steps in one batch
  (``backends.llama_batch``);
- ``LlamaCppCursor``: one request's sequence in that context, so each request has its own KV cache while
  weights and batches are shared; it feeds ids through the scheduler, crops its sequence with
  ``llama_memory_seq_rm``, and gets back a copy of its logits rows (a numpy copy in C memory; no
  vocabulary-sized Python objects).

llama-cpp-python is an optional dependency, so it is imported on first use, not with this module.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mentorcollab_langchain.backends.base import Prompt, PromptStyle
from mentorcollab_langchain.backends.llama_batch import CacheSequence, SharedContext
from mentorcollab_langchain.backends.local import LoadOnce, LocalCursor
from mentorcollab_langchain.backends.prompts import render_chat, render_plain
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.words import whitespace_start_table
from mentorcollab_langchain.errors import BackendError, ConfigError, ContextTooLongError
from mentorcollab_langchain.models.registry import (
    DEFAULT_GENERATOR,
    PackagedModel,
    cache_dir,
    converted_dir,
    get_packaged_model,
    is_converted,
    verified_gguf,
)

# ggml's log levels, as the bundled ggml.h numbers them, and the Python levels they are. llama-cpp-python
# 0.3.36 reads them by an older numbering, under which a loader's warning shows as an error (the Qwen mentor's
# "control-looking token ... probably a bug in the model", on every first load) and an error is hidden
# as debug output; ``_llama_log_callback`` reads them by this one. CONT continues the line before.
GGML_LOG_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
GGML_LOG_CONT = 5


@functools.cache
def llama_library() -> ModuleType:
    """llama-cpp-python's C bindings, imported once, with llama.cpp's own logging kept to errors.

    llama.cpp's lines go to stderr when the ``llama-cpp-python`` logger is enabled for their level, which
    is ERROR unless the user configured that logger (their setting is kept).
    """
    try:
        from llama_cpp import llama_cpp as library
    except (ImportError, OSError) as error:
        raise BackendError(
            "the llama.cpp backend needs llama-cpp-python: pip install 'llama-cpp-python==0.3.36' "
            "(or use backend='transformers')"
        ) from error
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)
    library.llama_log_set(_llama_log_callback(library, llama_logger), ctypes.c_void_p(0))
    library.llama_backend_init()
    return library


@functools.cache  # llama.cpp keeps the pointer: the callback must live as long as the process
def _llama_log_callback(library: ModuleType, logger: logging.Logger) -> Any:
    last_level = [logging.INFO]

    @library.llama_log_callback
    def forward(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        last_level[0] = last_level[0] if level == GGML_LOG_CONT else GGML_LOG_LEVELS.get(level, logging.ERROR)
        if logger.isEnabledFor(last_level[0]):
            sys.stderr.write(text.decode("utf-8", errors="replace"))
            sys.stderr.flush()

    return forward


def default_threads() -> int:
    """The cores this process may run on: one thread per core decodes fastest on a quiet machine.

    llama.cpp's threads meet at every step, so on a machine where other busy processes take cores, a
    thread that loses its core stalls the others (measured here: 2 threads on 2 busy cores decode 4x
    slower than 1); pass ``n_threads`` there.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class LoadedGguf:
    """A llama.cpp model and the vocabulary facts every cursor on it needs, read once."""

    name: str
    packaged: PackagedModel
    path: Path
    model: Any  # llama_model pointer: the weights, shared by all contexts
    vocab: Any  # llama_vocab pointer
    n_vocab: int
    whitespace_start: list[bool]
    eog_ids: frozenset[int]  # end-of-generation tokens: <|im_end|>, <|endoftext|>, <eos>, ...
    chat_template: str  # from the GGUF's metadata; empty for base models
    _tokenizer: Any = None
    _tokenizer_lock: threading.Lock = field(default_factory=threading.Lock)
    _pieces: dict[int, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def chat_tokenizer(self) -> Any:
        """The packaged model's transformers tokenizer, used only to render chat templates (loaded once)."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = _load_chat_tokenizer(self.packaged, self.path)
            return self._tokenizer

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """llama.cpp's token ids for ``text``; special-token text such as ``<|im_start|>`` becomes its token.

        Special tokens are parsed everywhere, as a transformers tokenizer does, so that a rendered chat
        template tokenizes the same in both backends.
        """
        llama = llama_library()
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            ids = (llama.llama_token * capacity)()
            count = llama.llama_tokenize(self.vocab, data, len(data), ids, capacity, add_special, True)
            if count >= 0:
                return list(ids[:count])
            capacity = -count  # too small: llama.cpp says how many tokens it needs

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (special tokens as their text, as a transformers decode gives).

        Remembered per token: the decode loop re-reads a segment's text from all its tokens at every step.
        """
        if token in self._pieces:
            return self._pieces[token]
        llama = llama_library()
        buffer = ctypes.create_string_buffer(64)
        size = llama.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        if size < 0:
            buffer = ctypes.create_string_buffer(-size)
            size = llama.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, True)
        self._pieces[token] = buffer.raw[:size]
        return self._pieces[token]


_LOADED: LoadOnce[str, LoadedGguf] = LoadOnce()


def load_gguf(name: str, report: Callable[[str], None] = lambda message: None) -> LoadedGguf:
    """Load a packaged model's weights once per process and share them (kept for the process's life).

    A request on an already loaded model never waits for another model's (slow) first load. The weights
    do not depend on the context size, so contexts of any size share them.
    """
    return _LOADED.get(name, lambda: _load(name, report))


@dataclass(frozen=True)
class ContextShape:
    """What a context is made for: tokens per sequence, threads, and how many sequences share it."""

    n_ctx: int
    n_threads: int
    slots: int


_SHARED: LoadOnce[tuple[str, ContextShape], SharedContext] = LoadOnce()


def shared_context(loaded: LoadedGguf, shape: ContextShape) -> SharedContext:
    """The context that the cursors of concurrent requests on ``loaded`` share, created on first use.

    One per model and shape, kept for the process's life like the weights: its KV cache (``slots`` x
    ``n_ctx`` cells, allocated up front) is reused by every later request.
    """
    return _SHARED.get((loaded.name, shape), lambda: new_context(loaded, shape))


def new_context(loaded: LoadedGguf, shape: ContextShape) -> SharedContext:
    """A context of ``shape`` on ``loaded``'s weights (its KV cache allocated now)."""
    return SharedContext(
        llama_library(),
        loaded.model,
        loaded.name,
        loaded.n_vocab,
        n_ctx=shape.n_ctx,
        n_threads=shape.n_threads,
        slots=shape.slots,
    )


def _load(name: str, report: Callable[[str], None]) -> LoadedGguf:
    llama = llama_library()
    packaged = get_packaged_model(name)
    report(f"verifying {name} ({packaged.size / 1e6:.0f} MB)")
    path = verified_gguf(packaged)  # the only file we load: size and sha256 match the pin
    report(f"loading {name} with llama.cpp")
    model = llama.llama_model_load_from_file(str(path).encode(), llama.llama_model_default_params())
    if model is None:
        raise BackendError(f"llama.cpp could not load {path}")
    vocab = llama.llama_model_get_vocab(model)
    n_vocab = llama.llama_vocab_n_tokens(vocab)
    # The vocabulary strings keep the tokenizer's own spelling (Ġ for byte-level BPE, ▁ for
    # SentencePiece), which is what words.py reads word starts from.
    spellings = [llama.llama_vocab_get_text(vocab, token).decode("utf-8", errors="replace") for token in range(n_vocab)]
    template = llama.llama_model_chat_template(model, None)
    return LoadedGguf(
        name=name,
        packaged=packaged,
        path=path,
        model=model,
        vocab=vocab,
        n_vocab=n_vocab,
        whitespace_start=whitespace_start_table(spellings),
        eog_ids=frozenset(token for token in range(n_vocab) if llama.llama_vocab_is_eog(vocab, token)),
        chat_template=(template or b"").decode("utf-8"),
    )


def _load_chat_tokenizer(packaged: PackagedModel, gguf: Path) -> Any:
    """The transformers tokenizer of a packaged model, the same one the transformers backend uses.

    Where the model was converted for transformers its folder has it. Otherwise it is read from the
    verified GGUF (seconds to tens of seconds) and saved beside the converted models, so later
    processes load it in about a second without converting the weights.
    """
    from transformers import AutoTokenizer

    options = {"trust_remote_code": False, "local_files_only": True}  # never run code shipped with a model
    if is_converted(packaged):
        return AutoTokenizer.from_pretrained(converted_dir(packaged), **options)
    folder = cache_dir() / "tokenizers" / converted_dir(packaged).name
    if folder.is_dir():
        return AutoTokenizer.from_pretrained(folder, **options)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, **options)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        tokenizer.save_pretrained(staging)
        staging.replace(folder)
    except OSError:
        pass  # only a cache: another process saved it first, or the cache is read-only; ours still works
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tokenizer


class LlamaCppBackend:
    """A packaged model (by name) run in process by llama.cpp; loaded lazily on first use.

    Concurrent requests on the same model, ``n_ctx`` and ``n_threads`` share one context of
    ``batch_slots`` sequences and decode their steps together (``backends.llama_batch``); a cursor opened
    while all slots are taken gets a context of its own and decodes alone. The shared context's KV cache,
    ``batch_slots`` x ``n_ctx`` cells, is allocated on first use and kept (about 95 MB per slot of 4096
    tokens for the 135M generator, 120 MB for the 1.5B mentor; creating it takes about 0.5 s here).

    A request's text must not depend on what runs beside it, so ``batch_slots`` defaults to the model's
    ``exact_batch_rows``: the widest batch whose logits equal each request's alone, bit for bit. llama.cpp
    picks its matrix kernels by the number of rows, and for K-quant weights (the Qwen mentor, Gemma) the
    kernel for four rows or more sums in another order, moving logits by up to a logit; SmolLM2's Q4_1
    weights take the same kernel at every width measured, so the generator batches 8 requests. A larger
    ``batch_slots`` trades that guarantee for throughput; ``1`` batches nothing.

    With ``prefix_cache`` (the default) a request takes over the prompt tokens that a finished request on
    the same shared context left in its sequence, as far as the two prompts agree: a few-shot or RAG
    prompt's common part is read once per slot instead of once per request. Only whole prompt batches are
    taken over, so every logit is what a fresh read computes, bit for bit (``backends.local``); the
    tokens taken over count in the cursor's ``tokens_cached``, not its ``tokens_read``. Turn it off to
    measure each request as if it ran alone (the evaluation and the bench's comparisons do).
    """

    def __init__(
        self,
        model: str = DEFAULT_GENERATOR,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        batch_slots: int | None = None,
        prefix_cache: bool = True,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        packaged = get_packaged_model(model)  # fail now, not at first use, on a name without a verified GGUF
        batch_slots = packaged.exact_batch_rows if batch_slots is None else batch_slots
        if batch_slots < 1:
            raise ConfigError(f"batch_slots must be at least 1, not {batch_slots}")
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
        self.batch_slots = batch_slots
        self.prefix_cache = prefix_cache
        self._report = report

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def loaded(self) -> LoadedGguf:
        return load_gguf(self.model, self._report)

    def prompt_ids(self, prompt: Prompt, style: PromptStyle = "chat") -> list[int]:
        """Token ids of the rendered prompt, ending where the assistant's answer begins."""
        loaded = self.loaded
        if style == "chat" and loaded.chat_template:
            # The template writes its own special tokens (a BOS where the model wants one).
            return loaded.tokenize(render_chat(loaded.chat_tokenizer, prompt), add_special=False)
        # Plain text gets the vocabulary's own special tokens (Gemma needs its <bos>).
        return loaded.tokenize(render_plain(prompt, style), add_special=True)

    def open(
        self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY, grammar: str | None = None
    ) -> LlamaCppCursor:
        """A cursor after the rendered prompt; with ``grammar`` it writes only text the grammar accepts."""
        prompt_ids = self.prompt_ids(prompt, style)
        if not prompt_ids:
            raise ConfigError(f"the prompt renders to no tokens for {self.model}: a model needs text to continue")
        if len(prompt_ids) >= self.n_ctx:
            raise ContextTooLongError(
                f"the prompt is {len(prompt_ids)} tokens for {self.model}, whose context holds {self.n_ctx} "
                "(raise n_ctx)"
            )
        shape = ContextShape(self.n_ctx, self.n_threads, self.batch_slots)
        return LlamaCppCursor(
            self.loaded, prompt_ids, shape=shape, sampling=sampling, grammar=grammar, prefix_cache=self.prefix_cache
        )


class LlamaCppCursor(LocalCursor[LoadedGguf]):
    """One request's KV cache (a sequence of a shared ``llama_context``) on a llama.cpp model, moved by text."""

    context_advice = " (raise n_ctx)"

    def __init__(
        self,
        loaded: LoadedGguf,
        prompt_ids: list[int],
        *,
        shape: ContextShape,
        sampling: Sampling = GREEDY,
        grammar: str | None = None,
        prefix_cache: bool = True,
    ) -> None:
        super().__init__(
            loaded,
            prompt_ids,
            end_ids=loaded.eog_ids,
            context_length=shape.n_ctx,
            sampling=sampling,
            grammar=grammar,
        )
        self.prefix_cache = prefix_cache
        opened = shared_context(loaded, shape).open_sequence(prompt_ids if prefix_cache else ())
        self._own_context: SharedContext | None = None
        if opened is None:  # every slot is taken: this cursor decodes alone, in a context of its own
            self._own_context = new_context(loaded, replace(shape, slots=1))
            opened = self._own_context.open_sequence()
            assert opened is not None
        self._sequence: CacheSequence | None = opened[0]
        self.decode_calls = 0  # llama_decode calls this cursor's tokens went into
        self.adopt_cache(opened[1])  # crops what the sequence held past what this prompt may reuse

    def _live_sequence(self) -> CacheSequence:
        if self._sequence is None:
            raise BackendError(f"{self._model.name}: the cursor was closed")
        return self._sequence

    def _encode(self, text: str) -> list[int]:
        return self._model.tokenize(text, add_special=False)

    def _decode_ids(self, ids: Sequence[int]) -> str:
        return b"".join(map(self._model.piece, ids)).decode("utf-8", errors="replace")

    def _grammar_tokenizer(self) -> Any:
        from llguidance.llamacpp import lltokenizer_from_vocab

        # llguidance reads each token through llama-cpp-python functions that warn they are deprecated: one
        # warning per token of the vocabulary, with nothing for us to change.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return lltokenizer_from_vocab(self._model.vocab, eos_token=sorted(self._model.eog_ids))

    def _vocabulary_size(self) -> int:
        return self._model.n_vocab

    def _move_to(self, target: list[int], outputs: int = 1, hidden: bool = False) -> np.ndarray:
        self._live_sequence()
        return super()._move_to(target, outputs, hidden)

    def _forward(self, ids: list[int], outputs: int, hidden: bool) -> np.ndarray:
        """Decode ``ids`` in chunks the context takes in one call, asking for logits at the last ``outputs``.

        Each chunk goes through the shared context's scheduler, which batches one-token steps with other
        cursors' and hands back copies of this cursor's rows.
        """
        sequence = self._live_sequence()
        rows: list[np.ndarray] = []
        first_output = len(ids) - outputs
        chunk_size = sequence.shared.batch_tokens
        for start in range(0, len(ids), chunk_size):
            chunk = ids[start : start + chunk_size]
            wanted = [index for index in range(len(chunk)) if start + index >= first_output]
            try:
                rows.extend(sequence.decode(chunk, len(self.cached_ids) + start, wanted))
                self.decode_calls += 1
            except BackendError:
                self._forget_cache()  # the scheduler emptied the sequence
                raise
        return np.stack(rows)

    def _crop_cache(self, keep: int) -> int:
        return self._live_sequence().crop(keep)

    def hidden_state(self, text: str) -> list[float]:
        raise BackendError(
            f"{self._model.name} on llama.cpp does not expose hidden states; "
            "use the transformers backend (backend='transformers') for hidden-state verifiers such as mlp"
        )

    def close(self) -> None:
        """Give the sequence back (and free a context of its own); the shared weights and context stay."""
        if self._sequence is not None:
            self._sequence.close(held=self.reusable_ids() if self.prefix_cache else ())
            self._sequence = None
        if self._own_context is not None:
            self._own_context.close()
            self._own_context = None
        super().close()
