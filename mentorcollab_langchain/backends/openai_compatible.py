"""A model served by an existing engine behind an OpenAI-compatible API (vLLM, SGLang, llama.cpp server).

This is how the mentor scales past one machine. The prompt is rendered locally with the model's own chat
template (from a local tokenizer or a packaged model), the shared response text is appended, and the
server continues it through ``/v1/completions``. Word boundaries come from the generated tokens that
the server reports with ``logprobs`` (never from prompt echo, which some servers shift by one).

A word is fetched in small chunks of tokens: most words are one or two tokens, so asking for a few at a
time keeps the mentor's wasted tokens low without a round trip per token. Tokens the server generated
past the end of a word are counted as spent, so the cost figures stay honest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from mentorcollab_langchain.backends.base import Piece, Prompt, PromptStyle, as_messages, render_plain
from mentorcollab_langchain.backends.http_client import CircuitBreaker, OpenAICompatibleClient
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.models.registry import resolve_model

WORD_CHUNK_TOKENS = 4
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
            return self.tokenizer.apply_chat_template(as_messages(prompt), tokenize=False, add_generation_prompt=True)
        return render_plain(prompt, style)

    def open(self, prompt: Prompt, style: PromptStyle = "chat") -> OpenAICompatibleCursor:
        return OpenAICompatibleCursor(self, self.render(prompt, style))

    def complete(self, prompt: str, max_tokens: int, *, logprobs: int = 1, stop: Sequence[str] = ()) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "logprobs": logprobs,
        }
        if stop:
            payload["stop"] = list(stop)
        answer = self.client.post("/v1/completions", payload)
        try:
            return answer["choices"][0] | {"usage": answer.get("usage") or {}}
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.model_name}: unexpected completion response {str(answer)[:200]}") from None

    def close(self) -> None:
        self.client.close()


class OpenAICompatibleCursor:
    """A remote model has no cache of ours to move: each call sends the prompt and the response text."""

    def __init__(self, backend: OpenAICompatibleBackend, prompt: str) -> None:
        self.backend = backend
        self.prompt = prompt

    def next_word(self, text: str, max_tokens: int) -> Piece:
        word, tokens, spent = "", 0, 0
        while tokens < max_tokens:
            asked = min(WORD_CHUNK_TOKENS, max_tokens - tokens)
            choice = self.backend.complete(self.prompt + text + word, asked)
            pieces = _token_texts(choice)
            spent += _completion_tokens(choice, pieces)
            for index, piece in enumerate(pieces):
                if (tokens > 0 or index > 0) and piece[:1].isspace():
                    return Piece(word, tokens, extra_tokens=spent - tokens)
                word += piece
                tokens += 1
            if len(pieces) < asked:  # the model ended its text before the chunk was full
                return Piece(word, tokens, eos=choice.get("finish_reason") == "stop", extra_tokens=spent - tokens)
        return Piece(word, tokens, extra_tokens=spent - tokens)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        choice = self.backend.complete(self.prompt + text, max_tokens, stop=stop)
        pieces = _token_texts(choice)
        written = choice.get("text", "".join(pieces))
        ended = choice.get("finish_reason") == "stop" and len(pieces) < max_tokens
        stopped = any(marker in "".join(pieces) for marker in stop)
        return Piece(written, len(pieces), eos=ended and not stopped)

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


def _token_texts(choice: dict[str, Any]) -> list[str]:
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens")
    if tokens is None:
        raise BackendError("the server returned no generated-token logprobs; it must support `logprobs`")
    return [str(token) for token in tokens]


def _completion_tokens(choice: dict[str, Any], pieces: list[str]) -> int:
    return int(choice["usage"].get("completion_tokens") or len(pieces))
