"""A scripted model for unit tests that must force an exact situation (a divergence, a failure).

It "writes" a fixed answer, one whitespace-led word per token. Asked at a text that is not a prefix of
its answer (after it adopted the other model's words, say), it goes on from the same word count, so
its behaviour stays predictable. Never the only proof that a feature works: real backends are.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import replace

from mentorcollab_langchain.backends.base import Confidence, ContinuationScore, Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.errors import BackendError

_WORD = re.compile(r"\s*\S+|\s+$")


class ScriptedBackend:
    def __init__(
        self,
        answer: str,
        *,
        name: str = "scripted",
        label_logprobs: Sequence[float] = (-0.5, -1.0),
        fail_from_call: int | None = None,
        confidence: Sequence[float] = (),
        word_logprob: float = -1.0,
    ) -> None:
        """``confidence[i]`` is the top-1 probability of the i-th word (1.0 past the list; its entropy is
        scripted as one minus that); a scored
        continuation gets ``word_logprob`` for each of its words that the script would write there, and
        ten times that for each other word."""
        self.words = _WORD.findall(answer)
        self.answer = "".join(self.words)
        # How many words end at each length of the answer (every word is non-empty, so one per length).
        ends = itertools.accumulate((len(word) for word in self.words), initial=0)
        self.words_ending_at = {end: count for count, end in enumerate(ends)}
        self.confidence = list(confidence)
        self.word_logprob = word_logprob
        self.name = name
        self.labels = list(label_logprobs)
        self.fail_from_call = fail_from_call
        self.calls = 0
        self.prompts: list[Prompt] = []
        self.grammars: list[str | None] = []

    @property
    def model_name(self) -> str:
        return self.name

    def open(
        self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY, grammar: str | None = None
    ) -> ScriptedCursor:
        """A script writes its answer whatever the sampling or grammar: it forces situations, it does not
        decode. The grammar is recorded in ``grammars``, so tests can see that a run asked for one."""
        self.prompts.append(prompt)
        self.grammars.append(grammar)
        return ScriptedCursor(self)


class ScriptedCursor:
    def __init__(self, backend: ScriptedBackend) -> None:
        self.backend = backend
        self.tokens_read = 0

    def _call(self) -> None:
        self.backend.calls += 1
        if self.backend.fail_from_call is not None and self.backend.calls >= self.backend.fail_from_call:
            raise BackendError(f"{self.backend.name}: scripted failure on call {self.backend.calls}")

    def _position(self, text: str) -> int:
        """Index of the next word to write after ``text``."""
        count = self.backend.words_ending_at.get(len(text))
        if count is not None and self.backend.answer.startswith(text):
            return count
        return len(_WORD.findall(text))

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        self._call()
        start = self._position(text)
        words = self.backend.words[start : start + max_tokens]
        written = "".join(words)
        cut = min((written.index(marker) for marker in stop if marker in written), default=None)
        if cut is not None:
            kept = sum(1 for index in range(len(words)) if len("".join(words[:index])) < cut)
            return Piece(written[:cut], kept, generated=len(words), stopped=True)
        return Piece(written, len(words), eos=start + len(words) >= len(self.backend.words) and len(words) < max_tokens)

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        piece = self.generate(text, min(max_tokens, 1))
        if not with_confidence:
            return piece
        index = self._position(text)
        top = self.backend.confidence[index] if index < len(self.backend.confidence) else 1.0
        return replace(piece, confidence=Confidence(top, (1.0 - top) / 2, entropy=1.0 - top))

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        self._call()
        start, words = self._position(text), _WORD.findall(continuation)
        expected = self.backend.words[start : start + len(words)]
        logprob = sum(self.backend.word_logprob * (1 if word == own else 10) for word, own in
                      zip(words, expected + [None] * len(words), strict=False))
        self.tokens_read += len(words)
        return ContinuationScore(logprob, len(words))

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        self._call()
        return self.backend.labels[: len(labels)]

    def hidden_state(self, text: str) -> list[float]:
        self._call()
        return [float(len(text)), float(len(self.backend.words))]

    def grammar_prefix_length(self, text: str) -> int:
        """A script follows no grammar, so it accepts all of ``text`` (real backends check it)."""
        return len(text)

    def close(self) -> None:
        pass
