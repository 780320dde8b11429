"""Running the synchronous engine for async callers, and stopping it when they go away.

The engine is one synchronous decode loop. ``ainvoke``/``astream`` must not block the event loop, so
``events_in_thread`` runs the loop in a worker thread and hands its events over a queue. A caller who
cancels (or stops reading) sets a flag that ``cancellable`` backends check before each model call, and
the request's ``AsyncScope`` cuts off any HTTP call to a remote model that is in flight, so the worker
stops within one model call and frees both caches before the caller's iteration ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from mentorcollab_langchain.backends.base import (
    Backend,
    ContinuationScore,
    Cursor,
    Piece,
    Prompt,
    PromptStyle,
    takes_grammar,
)
from mentorcollab_langchain.backends.http_client import CURRENT_ASYNC_SCOPE, AsyncScope
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.engine import Event
from mentorcollab_langchain.errors import GenerationCancelled


def _stop_if(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise GenerationCancelled("the caller cancelled the request")


class _CancellableCursor:
    """A cursor that refuses its next model call once ``cancel`` is set; everything else passes through."""

    def __init__(self, cursor: Cursor, cancel: threading.Event) -> None:
        self._cursor = cursor
        self._cancel = cancel

    def next_word(self, text: str, max_tokens: int, **options: Any) -> Piece:
        _stop_if(self._cancel)
        return self._cursor.next_word(text, max_tokens, **options)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        _stop_if(self._cancel)
        return self._cursor.generate(text, max_tokens, stop)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        _stop_if(self._cancel)
        return self._cursor.label_logprobs(text, labels)

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        _stop_if(self._cancel)
        return self._cursor.score_continuation(text, continuation)

    def hidden_state(self, text: str) -> list[float]:
        _stop_if(self._cancel)
        return self._cursor.hidden_state(text)

    def close(self) -> None:
        self._cursor.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _CancellableBackend:
    def __init__(self, backend: Backend, cancel: threading.Event) -> None:
        self._backend = backend
        self._cancel = cancel

    @property
    def model_name(self) -> str:
        return self._backend.model_name

    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> Cursor:
        _stop_if(self._cancel)
        return _CancellableCursor(self._backend.open(prompt, style, sampling), self._cancel)


class _CancellableGrammarBackend(_CancellableBackend):
    """The same, for a backend that decodes under a grammar: its ``open`` takes one too."""

    def open(
        self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY, grammar: str | None = None
    ) -> Cursor:
        _stop_if(self._cancel)
        return _CancellableCursor(self._backend.open(prompt, style, sampling, grammar=grammar), self._cancel)


def cancellable(backend: Backend, cancel: threading.Event) -> Backend:
    """``backend`` whose cursors raise ``GenerationCancelled`` at their next model call once ``cancel`` is set.

    ``GenerationCancelled`` is a ``BaseException``, so the engine does not record it as a mentor failure
    and go on with the generator alone.
    """
    wrapper = _CancellableGrammarBackend if takes_grammar(backend) else _CancellableBackend
    return wrapper(backend, cancel)


_DONE = object()


async def events_in_thread(produce: Callable[[threading.Event], Iterable[Event]]) -> AsyncIterator[Event]:
    """The events of ``produce(cancel)``, run in a worker thread; leaving the loop early stops the worker.

    ``produce`` must stop when ``cancel`` is set (run the engine on ``cancellable`` backends). Its HTTP
    calls to remote models come back to this loop (``AsyncScope``), so they use an async client and a
    cancelled caller cuts them off mid-request. An error in the worker is raised here, to the caller.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()
    scope = AsyncScope(loop)

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def work() -> None:
        CURRENT_ASYNC_SCOPE.set(scope)  # this thread's own context: only this run's calls use the scope
        try:
            for event in produce(cancel):
                put(event)
        except GenerationCancelled:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the caller, who re-raises it
            put(error)
        finally:
            put(_DONE)  # the worker's last act

    worker = threading.Thread(target=work, name="mentorcollab-request", daemon=True)
    worker.start()
    done = False
    try:
        while not done:
            item = await queue.get()
            done = item is _DONE
            if isinstance(item, BaseException):
                raise item
            if not done:
                yield item
    finally:
        cancel.set()
        scope.cancel()
        await scope.aclose()
        # The worker stops within one model call; wait for its last act and its end, so that when the
        # caller moves on (and frees its request slot) this request's caches are closed and its thread gone.
        while not done:
            done = await queue.get() is _DONE
        while worker.is_alive():  # it has nothing left to do but exit: a few microseconds
            await asyncio.sleep(0.001)
