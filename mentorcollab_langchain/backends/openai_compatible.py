"""A model served by an existing engine behind an OpenAI-compatible API (vLLM, SGLang, llama.cpp server).

This is how the mentor scales past one machine. The prompt is rendered locally with the model's own chat
template (from a local tokenizer or a packaged model), the shared response text is appended, and the
server continues it through ``/v1/completions``. Word boundaries come from the generated text alone
(never from prompt echo, which some servers shift by one), split into tokens by the same local
tokenizer. Generated-token ``logprobs`` would name the tokens too, but llama.cpp's server spends about
0.1 s per token computing them over the whole vocabulary in Python, which made a remote model three
times slower here; they are asked for only where the engine needs probabilities (option labels).

A round trip costs time and the server re-reads the prompt, so the cursor reads ahead: it keeps the
tokens the server wrote past the word it was asked for. A probe asks for a few tokens (most words are
one or two), so the mentor wastes little. When the next call continues exactly where the kept tokens
begin (the model writing its own text, as a remote generator does between probes), they are used
without a request, and each further request asks for twice as many, up to ``READ_AHEAD_LIMIT``. Every
generated token is billed to the piece whose call generated it (``Piece.generated``), so the cost
figures count what the server did, kept or not.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from mentorcollab_langchain.backends.base import Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.http_client import CircuitBreaker, OpenAICompatibleClient
from mentorcollab_langchain.backends.prompts import render_chat, render_plain
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models.registry import resolve_model

WORD_CHUNK_TOKENS = 4  # the first request at a new text: enough for most words
READ_AHEAD_LIMIT = 64  # the largest request while the model keeps continuing its own text
LABEL_CANDIDATES = 20  # top log-probabilities asked for when scoring option labels


class OpenAICompatibleBackend:
    """A remote model. ``tokenizer`` names where its chat template comes from (packaged name, id, folder)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        tokenizer: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        breaker: CircuitBreaker | None = None,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.model = model
        self.tokenizer_source = tokenizer
        self.client = OpenAICompatibleClient(
            base_url, api_key_env=api_key_env, timeout=timeout, max_retries=max_retries, breaker=breaker
        )
        self._report = report

    @property
    def model_name(self) -> str:
        return f"{self.model}@{self.client.base_url}"

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        location, local = resolve_model(self.tokenizer_source, self._report)
        return AutoTokenizer.from_pretrained(location, trust_remote_code=False, local_files_only=local)

    def render(self, prompt: Prompt, style: PromptStyle = "chat") -> str:
        """The prompt text the server continues: the chat template's rendering, or plain text."""
        if style == "chat" and getattr(self.tokenizer, "chat_template", None):
            return render_chat(self.tokenizer, prompt)
        return render_plain(prompt, style)

    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> OpenAICompatibleCursor:
        return OpenAICompatibleCursor(self, self.render(prompt, style), sampling)

    def complete(
        self, prompt: str, max_tokens: int, *, logprobs: int | None = None, sampling: Sampling = GREEDY
    ) -> dict[str, Any]:
        """One completion. A sampled one carries a seed fixed by the sampling seed and the prompt, so the
        server draws the same tokens when asked the same thing (vLLM and llama.cpp honour ``seed``)."""
        payload: dict[str, Any] = {
            "model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": sampling.temperature
        }
        if not sampling.greedy:
            payload["seed"] = sampling.key(self.model, prompt) % 2**31
        if logprobs is not None:
            payload["logprobs"] = logprobs
        answer = self.client.post("/v1/completions", payload)
        try:
            return answer["choices"][0] | {"usage": answer.get("usage") or {}}
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.model_name}: unexpected completion response {str(answer)[:200]}") from None

    def split_tokens(self, text: str) -> list[str]:
        """Generated text as the model's token texts, cut where the local tokenizer's tokens begin."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = [0, *(start for start, _ in offsets[1:])]
        return [text[start:end] for start, end in zip(starts, [*starts[1:], len(text)])]

    def close(self) -> None:
        self.client.close()


class OpenAICompatibleCursor:
    """A remote model has no cache of ours to move: each request sends the prompt and the response text.

    What it keeps instead is the read-ahead: tokens the server already wrote after ``_ahead_at``.
    """

    def __init__(self, backend: OpenAICompatibleBackend, prompt: str, sampling: Sampling = GREEDY) -> None:
        self.backend = backend
        self.prompt = prompt
        self.sampling = sampling
        self._ahead_at: str | None = None  # the response text the read-ahead tokens follow
        self._ahead: list[str] = []
        self._ahead_ended: str | None = None  # the server's finish_reason when it ended its text there
        self._chunk = WORD_CHUNK_TOKENS

    def next_word(self, text: str, max_tokens: int) -> Piece:
        word, tokens, generated = "", 0, 0
        while tokens < max_tokens:
            generated += self._read(text + word, max_tokens - tokens)
            if not self._ahead:
                if not tokens and self._ahead_ended != "stop":
                    raise BackendError(
                        f"{self.backend.model_name}: the server wrote nothing (finish_reason="
                        f"{self._ahead_ended!r}); the prompt probably fills its context window"
                    )
                return Piece(word, tokens, eos=self._ahead_ended == "stop", generated=generated)
            if tokens and self._ahead[0][:1].isspace():
                break
            word += self._take(1)[0]
            tokens += 1
        return Piece(word, tokens, generated=generated)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        tokens, generated, ended = [], 0, None
        if self._ahead_at == text:  # the read-ahead first
            tokens = self._take(max_tokens)
            ended = None if self._ahead else self._ahead_ended
        wanted = max_tokens - len(tokens)
        if wanted > 0 and ended is None:
            choice = self.backend.complete(self.prompt + text + "".join(tokens), wanted, sampling=self.sampling)
            more = self.backend.split_tokens(_text(choice))
            generated = _completion_tokens(choice, more)
            tokens += more
            ended = _ended(choice)
            self._ahead_at, self._ahead, self._ahead_ended = text + "".join(tokens), [], ended
        # Stop strings are cut here, as the local backend does: the tokens after the cut were still generated.
        written = "".join(tokens)
        cut = min((written.index(marker) for marker in stop if marker and marker in written), default=None)
        if cut is not None:
            kept = sum(1 for start in itertools.accumulate([0, *map(len, tokens[:-1])]) if start < cut)
            return Piece(written[:cut], kept, generated=generated)
        return Piece(written, len(tokens), eos=ended == "stop", generated=generated)

    def _read(self, text: str, wanted: int) -> int:
        """Make sure the read-ahead follows ``text`` and holds a token, unless the server ended there.

        Returns how many tokens the server generated for it (0 when the read-ahead already had one).
        """
        continuing = self._ahead_at == text
        if continuing and (self._ahead or self._ahead_ended):
            return 0
        self._chunk = min(self._chunk * 2, READ_AHEAD_LIMIT) if continuing else WORD_CHUNK_TOKENS
        asked = self._chunk if continuing else min(WORD_CHUNK_TOKENS, wanted)
        choice = self.backend.complete(self.prompt + text, asked, sampling=self.sampling)
        self._ahead_at, self._ahead = text, self.backend.split_tokens(_text(choice))
        self._ahead_ended = _ended(choice)
        return _completion_tokens(choice, self._ahead)

    def _take(self, count: int) -> list[str]:
        """Consume up to ``count`` read-ahead tokens; what is left follows the text they extend."""
        taken, self._ahead = self._ahead[:count], self._ahead[count:]
        self._ahead_at = (self._ahead_at or "") + "".join(taken)
        return taken

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        choice = self.backend.complete(self.prompt + text, 1, logprobs=LABEL_CANDIDATES)
        try:
            top: dict[str, float] = choice["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.backend.model_name}: the server returned no top log-probabilities") from None
        # A label outside the top candidates is at most as likely as the least likely one listed.
        floor = min(top.values()) if top else float("-inf")
        return [max((lp for token, lp in top.items() if token.strip() == label), default=floor) for label in labels]

    def hidden_state(self, text: str) -> list[float]:
        raise BackendError(f"{self.backend.model_name}: a remote model does not expose hidden states")

    def close(self) -> None:
        pass


def _text(choice: dict[str, Any]) -> str:
    if not isinstance(choice.get("text"), str):
        raise BackendError(f"the server's completion has no text: {str(choice)[:200]}")
    return choice["text"]


def _ended(choice: dict[str, Any]) -> str | None:
    """The finish reason when the model ended its text, None when it only reached ``max_tokens``."""
    reason = choice.get("finish_reason")
    return None if reason == "length" else (reason or "stop")


def _completion_tokens(choice: dict[str, Any], pieces: list[str]) -> int:
    return int(choice["usage"].get("completion_tokens") or len(pieces))
