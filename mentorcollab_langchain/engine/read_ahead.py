"""The mentor reads the prompt ahead, on a background thread, while the generator writes.

Without it the first probe pays for the whole prompt: on a few-shot or RAG prompt of a thousand tokens,
the mentor's first call spends most of its time reading. A cursor that can read its prompt on its own
(``read_prompt``: the in-process cursors fill their KV cache, a remote one warms the server's prefix
cache) starts doing so as the request opens, and by the first probe most or all of the prompt is read.

``ReadingAhead`` stands in for the mentor's cursor while that happens. Every call to the mentor waits
for the reading to end first, so the cursor is never used by two threads at once; ``tokens_read`` and
``tokens_cached`` are read without waiting (the engine reads them after every step, including the
generator's, and a count that is still growing is counted by the next step). A failure while reading
ahead is raised by the first mentor call, where ``on_mentor_error`` handles it like any other mentor
failure; later calls use the cursor afresh (it follows the text, so a half-read prompt is simply read
on). Closing asks the reading to stop at its next step, waits for it and then closes the cursor.

The threads really overlap: llama.cpp (through ctypes) and torch release the GIL while they compute,
and a remote read is a wait on the network. On a machine with few cores the two models then share them,
so the generator writes slower while the mentor reads; ``CollabConfig.read_ahead`` switches it off.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Sequence
from typing import Any

from mentorcollab_langchain.backends.base import ContinuationScore, Cursor, Piece, ReadsPrompt


class ReadingAhead:
    """A mentor cursor whose prompt is being read on a background thread (module docstring)."""

    def __init__(self, cursor: ReadsPrompt) -> None:
        self.cursor = cursor
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        # The reading runs in the opener's context, so on the async path (``http_client.AsyncScope``) a remote
        # mentor's read goes out on the caller's loop and a cancel cuts it off like any other mentor call.
        opener = contextvars.copy_context()
        self._thread = threading.Thread(target=opener.run, args=(self._read,), name="mentor-read-ahead", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            self.cursor.read_prompt(self._stop)
        except BaseException as error:  # noqa: BLE001 (handed, whatever it is, to the first mentor call)
            self._failure = error

    def _ready(self) -> Any:
        """The cursor, once the reading has ended; raises (once) what the reading failed with."""
        self._thread.join()
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        return self.cursor

    @property
    def tokens_read(self) -> int:
        return self.cursor.tokens_read

    @property
    def tokens_cached(self) -> int:
        return getattr(self.cursor, "tokens_cached", 0)

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        return self._ready().next_word(text, max_tokens, with_confidence=with_confidence)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        return self._ready().generate(text, max_tokens, stop)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        return self._ready().label_logprobs(text, labels)

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        return self._ready().score_continuation(text, continuation)

    def hidden_state(self, text: str) -> list[float]:
        return self._ready().hidden_state(text)

    def __getattr__(self, name: str) -> Any:
        """Anything else a cursor offers (``grammar_prefix_length``, ...), once the reading has ended."""
        if name.startswith("_"):  # not the cursor's business, and never a loop while __init__ runs
            raise AttributeError(name)
        return getattr(self._ready(), name)

    def close(self) -> None:
        """Stop the reading at its next step, wait for it, then close the cursor (a failure of the reading
        is dropped: nothing will ask the mentor anything any more)."""
        self._stop.set()
        self._thread.join()
        self.cursor.close()


def read_ahead(cursor: Cursor) -> Cursor:
    """``cursor`` reading its prompt in the background, if it can; else ``cursor`` itself."""
    return ReadingAhead(cursor) if isinstance(cursor, ReadsPrompt) else cursor
