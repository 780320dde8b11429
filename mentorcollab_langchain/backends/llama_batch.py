"""Concurrent requests on one llama.cpp model decode their steps together, in one context.

At batch 1 a decode step reads every weight of the model to compute one token; eight steps of eight
requests in one ``llama_decode`` read them once. Measured on the project's 2-core CPU (one thread, 20
steps of 8 sequences): the 135M generator decodes 127 tok/s batched against 80 tok/s one sequence at a
time (1.6x; the 1.5B mentor 1.1x to 1.3x). There the arithmetic, not the memory, is the limit, so
batching gains little more; reading prompts gains nothing, as a prompt is already one large batch.

- ``SharedContext``: one ``llama_context`` whose KV cache holds ``slots`` sequences. The cache is not
  unified (``kv_unified`` off): each sequence has its own ``n_ctx`` cells and attends only to them, so its
  logits do not depend on how long the others are. Each cursor owns one sequence id (``CacheSequence``).
- A closed cursor's sequence keeps the prompt tokens it declares reusable (``CacheSequence.close``), and
  the next cursor to open takes the free sequence that shares the longest prefix with its prompt (the one
  released longest ago when none does): a few-shot or RAG prompt's common part is read once per slot,
  not once per request. Which tokens may be reused without changing any logits is the cursor's rule
  (``LocalCursor.reusable_ids`` and ``adopt_cache``); the context only matches tokens.
- The scheduler inside it: a cursor thread submits the tokens it wants decoded (``CacheSequence.decode``). The
  thread that finds no decode running leads: it puts every waiting one-token step into one batch (each
  token with its cursor's sequence id and a logits flag), runs ``llama_decode`` and hands each cursor a
  copy of its logits rows. A feed of several tokens (a prompt, a catch-up, a scored continuation) is
  decoded by itself, exactly as a cursor alone would feed it.
- Gathering: the cursors of the previous batch are usually a little Python away from their next step,
  so a leader waits for them, at most half the previous decode's time. A cursor alone has
  nobody to wait for and decodes at once, as fast as in a context of its own.

All use of the context (decode, cropping a sequence) holds ``_context_lock``; the queue and the leader's
role are guarded by ``_changed``'s lock, which is never held during a decode.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from mentorcollab_langchain.backends.local import common_prefix_length
from mentorcollab_langchain.errors import BackendError

# Tokens per llama_decode call when a long text is fed; also the most logits rows one call returns.
BATCH_TOKENS = 512
# A leader waits for the previous batch's cursors at most this share of the previous decode's time.
GATHER_SHARE = 0.5


@dataclass
class _Step:
    """Tokens one sequence wants decoded, and what the decode gave back."""

    seq_id: int
    tokens: list[int]
    position: int  # the position of tokens[0] in its sequence
    outputs: list[int]  # indices into tokens whose next-token logits are wanted
    rows: np.ndarray | None = None
    error: BackendError | None = None
    done: bool = False


def _free_context(llama: ModuleType, context: Any, batch: Any) -> None:
    llama.llama_batch_free(batch)
    llama.llama_free(context)


class SharedContext:
    """One ``llama_context`` with ``slots`` sequences on a loaded model, and the scheduler that batches them."""

    def __init__(
        self, llama: ModuleType, model: Any, name: str, n_vocab: int, *, n_ctx: int, n_threads: int, slots: int
    ) -> None:
        params = llama.llama_context_default_params()
        params.n_ctx = n_ctx * slots  # without a unified cache each sequence gets n_ctx / n_seq_max cells
        params.n_seq_max = slots
        params.kv_unified = False
        params.n_batch = params.n_ubatch = max(min(BATCH_TOKENS, n_ctx), slots)
        params.n_threads = params.n_threads_batch = n_threads
        params.swa_full = True  # a full-size sliding-window cache (Gemma 3) can still be cropped on rollback
        context = llama.llama_init_from_model(model, params)
        if context is None:
            raise BackendError(f"llama.cpp could not create a context of {slots} x {n_ctx} tokens for {name}")
        self.name = name
        self.slots = slots
        self._llama = llama
        self._n_vocab = n_vocab
        self._context = context
        self._memory = llama.llama_get_memory(context)
        self._batch = llama.llama_batch_init(params.n_batch, 0, 1)
        self.batch_tokens = params.n_batch
        self._finalizer = weakref.finalize(self, _free_context, llama, context, self._batch)
        self._context_lock = threading.Lock()
        self._changed = threading.Condition()
        # Each free sequence and the tokens it keeps for the next cursor to reuse, the one released longest ago
        # first.
        self._free: dict[int, list[int]] = {seq_id: [] for seq_id in range(slots)}
        # (seq_id, held tokens), appended without a lock: a garbage-collected cursor may free its id
        self._released: deque[tuple[int, list[int]]] = deque()
        self._pending: dict[int, _Step] = {}
        self._leading = False
        self._last_group: set[int] = set()  # the sequences of the previous one-token batch
        self._last_seconds = 0.0
        self.decode_calls = 0
        self.widest_batch = 0  # the most sequences one decode has held: did requests really batch?

    # -- sequences -------------------------------------------------------------------------------

    def open_sequence(self, prompt_ids: Sequence[int] = ()) -> tuple[CacheSequence, int] | None:
        """A free sequence and how many leading ``prompt_ids`` it holds; None when all ``slots`` are taken.

        The sequence picked is the free one sharing the longest prefix with ``prompt_ids`` (on a tie, the one
        released longest ago). It still holds whatever it held: the caller crops it to what it reuses, to
        nothing when it reuses nothing.
        """
        with self._changed:
            self._collect_released()
            if not self._free:
                return None
            shared = {seq_id: common_prefix_length(held, prompt_ids) for seq_id, held in self._free.items()}
            seq_id = max(shared, key=shared.__getitem__)  # the first of the longest: dicts keep their order
            del self._free[seq_id]
        return CacheSequence(self, seq_id), shared[seq_id]

    def _release(self, seq_id: int, held: list[int]) -> None:
        self._released.append((seq_id, held))

    def _collect_released(self) -> None:
        """Return released ids to the free list (called holding ``_changed``'s lock)."""
        while self._released:
            seq_id, held = self._released.popleft()
            self._free[seq_id] = held
            self._last_group.discard(seq_id)

    def crop(self, seq_id: int, keep: int) -> int:
        """Remove the sequence's positions from ``keep`` on; how many stay (``keep``, or 0 after emptying it)."""
        with self._context_lock:
            if self._llama.llama_memory_seq_rm(self._memory, seq_id, keep, -1):
                return keep
            self._llama.llama_memory_seq_rm(self._memory, seq_id, 0, -1)
            return 0

    # -- the scheduler ---------------------------------------------------------------------------

    def decode(self, seq_id: int, tokens: list[int], position: int, outputs: list[int]) -> np.ndarray:
        """Decode ``tokens`` of one sequence from ``position`` on: a copy of the logits rows at ``outputs``.

        Blocks until a batch holding this step has run; the calling thread may run that batch itself.
        """
        step = _Step(seq_id, tokens, position, outputs)
        with self._changed:
            self._pending[seq_id] = step
            self._changed.notify_all()
            while not step.done and self._leading:
                self._changed.wait()
            leads = not step.done
            if leads:
                self._leading = True
        if leads:
            try:
                self._run(self._gather(step))
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        if step.error is not None:
            raise step.error
        assert step.rows is not None
        return step.rows

    def _gather(self, own: _Step) -> list[_Step]:
        """The steps of the next batch: ``own`` alone if it feeds several tokens, else every one-token step,
        after waiting (briefly) for the previous batch's sequences to submit theirs."""
        with self._changed:
            if len(own.tokens) > 1:
                group = [own]
            else:
                self._collect_released()
                deadline = time.perf_counter() + GATHER_SHARE * self._last_seconds
                while not self._last_group <= self._pending.keys():
                    left = deadline - time.perf_counter()
                    if left <= 0:
                        break
                    self._changed.wait(left)
                    self._collect_released()
                group = [step for step in self._pending.values() if len(step.tokens) == 1]  # at most ``slots``
            for step in group:
                del self._pending[step.seq_id]
            return group

    def _run(self, group: list[_Step]) -> None:
        """One ``llama_decode`` of ``group``; each step gets its rows (or an error), and its waiter is woken.

        The waiters are woken whatever happens here, so that no cursor thread waits forever on a step.
        """
        started = time.perf_counter()
        try:
            with self._context_lock:
                self._decode(group)
        finally:
            with self._changed:
                for step in group:
                    if step.rows is None and step.error is None:
                        step.error = BackendError(f"{self.name}: the decode was interrupted")
                    step.done = True
                if len(group[0].tokens) == 1:
                    self._last_group = {step.seq_id for step in group}
                    self._last_seconds = time.perf_counter() - started
                self._changed.notify_all()

    def _decode(self, group: list[_Step]) -> None:
        """Fill the batch with ``group``'s tokens, each with its sequence id, and decode (holding the context)."""
        index = 0
        for step in group:
            for offset, token in enumerate(step.tokens):
                self._batch.token[index] = token
                self._batch.pos[index] = step.position + offset
                self._batch.n_seq_id[index] = 1
                self._batch.seq_id[index][0] = step.seq_id
                self._batch.logits[index] = offset in step.outputs
                index += 1
        self._batch.n_tokens = index
        status = self._llama.llama_decode(self._context, self._batch)
        self.decode_calls += 1
        self.widest_batch = max(self.widest_batch, len(group))
        if status != 0:
            # A failed decode may leave part of the tokens cached: each cursor starts over from its text.
            for step in group:
                self._llama.llama_memory_seq_rm(self._memory, step.seq_id, 0, -1)
                step.error = BackendError(f"{self.name}: llama_decode failed with status {status}")
            return
        first = 0
        for step in group:  # a chunk of a long feed may want no rows: only its last chunk's are asked for
            rows = [self._logits_row(first + offset) for offset in step.outputs]
            step.rows = np.stack(rows) if rows else np.empty((0, self._n_vocab), dtype=np.float32)
            first += len(step.tokens)

    def _logits_row(self, index: int) -> np.ndarray:
        """A copy of the logits after the batch's ``index``-th token (the buffer is reused by the next decode)."""
        pointer = self._llama.llama_get_logits_ith(self._context, index)
        return np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).copy()

    def close(self) -> None:
        """Free the context now (a context of one cursor's own; shared ones live as long as the process)."""
        self._finalizer()


class CacheSequence:
    """One cursor's sequence in a ``SharedContext``: decoded and cropped through it, freed on close."""

    def __init__(self, shared: SharedContext, seq_id: int) -> None:
        self.shared = shared
        self.seq_id = seq_id
        # A cursor dropped without close() gives its sequence back, holding nothing, when it is collected.
        self._finalizer = weakref.finalize(self, shared._release, seq_id, [])

    def decode(self, tokens: list[int], position: int, outputs: list[int]) -> np.ndarray:
        return self.shared.decode(self.seq_id, tokens, position, outputs)

    def crop(self, keep: int) -> int:
        return self.shared.crop(self.seq_id, keep)

    def close(self, held: Sequence[int] = ()) -> None:
        """Give the sequence back, keeping ``held`` (the tokens at its first positions) for a later cursor."""
        if self._finalizer.detach() is not None:
            self.shared._release(self.seq_id, list(held))
