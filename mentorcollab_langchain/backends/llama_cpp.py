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
- ``LlamaCppCursor``: one ``llama_context`` per cursor, so each request has its own KV cache while the
  weights are shared; it feeds ids with ``llama_decode``, crops the cache with ``llama_memory_seq_rm``,
  and hands the decode loop a view of llama.cpp's logits buffer, without copying the vocabulary into
  Python.

llama-cpp-python is an optional dependency, so it is imported on first use, not with this module.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mentorcollab_langchain.backends.base import Prompt, PromptStyle
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

# Tokens per llama_decode call when a long text is fed; also the most logits rows one call returns.
_BATCH_TOKENS = 512


@functools.cache
def llama_library() -> ModuleType:
    """llama-cpp-python's C bindings, imported once, with llama.cpp's own logging kept to errors.

    llama-cpp-python prints every loader line to stderr unless its logger is set; a user who configured
    that logger keeps their setting.
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
    library.llama_backend_init()
    return library


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
    """A packaged model (by name) run in process by llama.cpp; loaded lazily on first use."""

    def __init__(
        self,
        model: str = DEFAULT_GENERATOR,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        get_packaged_model(model)  # fail now, not at first use, on a name without a verified GGUF
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_threads()
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
        return LlamaCppCursor(
            self.loaded, prompt_ids, n_ctx=self.n_ctx, n_threads=self.n_threads, sampling=sampling, grammar=grammar
        )


def _free_context(llama: ModuleType, context: Any, batch: Any) -> None:
    llama.llama_batch_free(batch)
    llama.llama_free(context)


class LlamaCppCursor(LocalCursor[LoadedGguf]):
    """One request's KV cache (a ``llama_context``) on a shared llama.cpp model, moved by text."""

    context_advice = " (raise n_ctx)"

    def __init__(
        self,
        loaded: LoadedGguf,
        prompt_ids: list[int],
        *,
        n_ctx: int,
        n_threads: int,
        sampling: Sampling = GREEDY,
        grammar: str | None = None,
    ) -> None:
        llama = llama_library()
        params = llama.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = min(_BATCH_TOKENS, n_ctx)
        params.n_threads = params.n_threads_batch = n_threads
        params.swa_full = True  # a full-size sliding-window cache (Gemma 3) can still be cropped on rollback
        context = llama.llama_init_from_model(loaded.model, params)
        if context is None:
            raise BackendError(f"llama.cpp could not create a context of {n_ctx} tokens for {loaded.name}")
        super().__init__(
            loaded, prompt_ids, end_ids=loaded.eog_ids, context_length=n_ctx, sampling=sampling, grammar=grammar
        )
        self._llama = llama
        self._context = context
        self._memory = llama.llama_get_memory(context)
        self._batch = llama.llama_batch_init(params.n_batch, 0, 1)
        self._batch_size = params.n_batch
        # Freed by close(), or when the cursor is garbage collected if nobody closed it.
        self._finalizer = weakref.finalize(self, _free_context, llama, context, self._batch)
        self.decode_calls = 0

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
        if self._context is None:
            raise BackendError(f"{self._model.name}: the cursor was closed")
        return super()._move_to(target, outputs, hidden)

    def _forward(self, ids: list[int], outputs: int, hidden: bool) -> np.ndarray:
        """Decode ``ids`` in batches of at most ``_BATCH_TOKENS``, asking for logits at the last ``outputs``.

        A single row stays a view of llama.cpp's buffer (the decode loop's case: no copy per token); several
        are copied, since each batch's decode overwrites the previous one's.
        """
        rows: list[np.ndarray] = []
        first_output = len(ids) - outputs
        for start in range(0, len(ids), self._batch_size):
            chunk = ids[start : start + self._batch_size]
            wanted = [index for index in range(len(chunk)) if start + index >= first_output]
            self._decode_batch(chunk, len(self.cached_ids) + start, wanted)
            rows.extend(self._logits_row(index) if outputs == 1 else self._logits_row(index).copy() for index in wanted)
        return rows[0][np.newaxis] if outputs == 1 else np.stack(rows)

    def _decode_batch(self, chunk: list[int], position: int, wanted: list[int]) -> None:
        """One ``llama_decode`` of ``chunk`` from ``position`` on, asking for logits at ``wanted``."""
        batch, outputs = self._batch, set(wanted)
        batch.n_tokens = len(chunk)
        for index, token in enumerate(chunk):
            batch.token[index] = token
            batch.pos[index] = position + index
            batch.n_seq_id[index] = 1
            batch.seq_id[index][0] = 0
            batch.logits[index] = index in outputs
        status = self._llama.llama_decode(self._context, batch)
        self.decode_calls += 1
        if status != 0:
            # A failed decode may leave part of the ids in the cache: start over from the text next time.
            self._llama.llama_memory_clear(self._memory, True)
            self.cached_ids, self._logits = [], None
            raise BackendError(f"{self._model.name}: llama_decode failed with status {status}")

    def _logits_row(self, index: int) -> np.ndarray:
        """The logits after the batch's ``index``-th token: a view, valid until the next decode."""
        pointer = self._llama.llama_get_logits_ith(self._context, index)
        return np.ctypeslib.as_array(pointer, shape=(self._model.n_vocab,))

    def _crop_cache(self, keep: int) -> int:
        if self._llama.llama_memory_seq_rm(self._memory, 0, keep, -1):
            return keep
        self._llama.llama_memory_clear(self._memory, True)
        return 0

    def hidden_state(self, text: str) -> list[float]:
        raise BackendError(
            f"{self._model.name} on llama.cpp does not expose hidden states; "
            "use the transformers backend (backend='transformers') for hidden-state verifiers such as mlp"
        )

    def close(self) -> None:
        """Free the context and its KV cache now; the shared weights stay loaded."""
        self._finalizer()
        self._context = None
        super().close()
