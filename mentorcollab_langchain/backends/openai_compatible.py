"""A model served by an existing engine behind an OpenAI-compatible API (vLLM, SGLang, llama.cpp server).

This is how the mentor scales past one machine. The prompt is rendered locally with the model's own chat
template (from a local tokenizer or a packaged model), the shared response text is appended, and the
server continues it through ``/v1/completions``. Word boundaries come from the generated text alone
(never from prompt echo, which some servers shift by one), split into tokens by the same local
tokenizer. Generated-token ``logprobs`` would name the tokens too, but llama.cpp's server spends about
0.1 s per token computing them over the whole vocabulary in Python, which made a remote model three
times slower here; they are asked for only where the engine needs probabilities (option labels, a
word's confidence, continuation scores).

A round trip costs time and the server re-reads the prompt, so the cursor reads ahead: it keeps the
tokens the server wrote past the word it was asked for. A probe asks for a few tokens (most words are
one or two), so the mentor wastes little. When the next call continues exactly where the kept tokens
begin (the model writing its own text, as a remote generator does between probes), they are used
without a request, and each further request asks for twice as many, up to ``READ_AHEAD_LIMIT``. Every
generated token is billed to the piece whose call generated it (``Piece.generated``), so the cost
figures count what the server did, kept or not.

Reading is counted as a server with a per-request prefix cache does it (vLLM's automatic prefix caching,
llama.cpp's slot reuse): the cursor remembers the string the server last held for it (the prompt it
sent plus what the server wrote back), and a request reads only the tokens of its prompt past the
longest common prefix with that string. A server without prefix caching reads more; vLLM caches whole
blocks of tokens, so it re-reads up to a block more. Several cursors on one llama.cpp slot evict each
other's prefix; the count is per cursor, as if each had its own slot.

Scoring a continuation never uses prompt ``echo``: llama-cpp-python's server (0.3.36) pairs each echoed
token with the distribution *after* it when the model adds no BOS token (Qwen), so every prompt logprob
is another token's, and it sorts the whole vocabulary in Python at every prompt position (16 s for a
47-token prompt here). Generated-token logprobs are right on every server, so the cursor has the server
write the continuation and report them (``score_continuation``):

- a forced run: a grammar that accepts only the continuation's text (the llama.cpp GBNF ``grammar``
  field, which llama-cpp-python's server reads on ``/v1/completions``) makes the server write it in one
  request. That server computes logprobs from the raw logits, before the grammar masks anything (0.3.36),
  so they are the model's own;
- where the server cut the text into other tokens than the local tokenizer, or does not take the field,
  a greedy run scores the tokens the model writes itself, and a logit bias forces one where it would not
  write it (vLLM reports logprobs before logit bias by default, llama.cpp always): about two requests per
  token the model would not have written. vLLM and SGLang name their constraints differently and ignore
  fields they do not know; a reply that leaves the forced text shows that, as an HTTP 400 or 422 shows a
  server that refuses the field, and the backend stops sending it (``forces_text``).

Either way the result is the server's own logprob of each token at its own position, at one logprob per
scored token on the server. Mirroring the server's batches in process reproduces its sum to 1e-6;
llama.cpp's quantized kernels move a logit by up to a few tenths of a nat with the batch a token was
evaluated in, so a fresh in-process pass agrees only to that.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any

from mentorcollab_langchain.backends.base import Confidence, ContinuationScore, Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.http_client import CircuitBreaker, OpenAICompatibleClient
from mentorcollab_langchain.backends.local import LoadOnce, common_prefix_length
from mentorcollab_langchain.backends.prompts import render_chat, render_plain
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.errors import BackendError, ConfigError
from mentorcollab_langchain.models.registry import resolve_model

WORD_CHUNK_TOKENS = 4  # the first request at a new text: enough for most words
READ_AHEAD_LIMIT = 64  # the largest request while the model keeps continuing its own text
LABEL_CANDIDATES = 20  # top log-probabilities asked for when scoring option labels
CONFIDENCE_CANDIDATES = 20  # top log-probabilities asked for a word's first token, for its Confidence
SCORE_RUN_TOKENS = 2  # the first greedy run when scoring; it doubles while the model writes the continuation
FORCE_BIAS = 100.0  # logit bias that forces a token (the largest bias vLLM accepts)

# Local tokenizers by where they load from, shared by every backend on the same model: loading one takes a
# second or more (Qwen's 151k-token vocabulary), which a chat model built per request would pay each time.
_TOKENIZERS: LoadOnce[str, Any] = LoadOnce()


class OpenAICompatibleBackend:
    """A remote model. ``tokenizer`` names where its chat template comes from (packaged name, id, folder)."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        tokenizer: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        breaker: CircuitBreaker | None = None,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        check_server_url(base_url)
        self.model = model
        self.tokenizer_source = tokenizer
        self.client = OpenAICompatibleClient(
            base_url,
            api_key_env=api_key_env,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            breaker=breaker,
        )
        self._report = report
        # Whether the server follows a ``grammar`` field: assumed until a reply shows it does not (module
        # docstring); then continuations are scored by greedy runs and forced tokens only.
        self.forces_text = True

    @property
    def model_name(self) -> str:
        return f"{self.model}@{self.client.base_url}"

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        location, local = resolve_model(self.tokenizer_source, self._report)
        return _TOKENIZERS.get(
            location, lambda: AutoTokenizer.from_pretrained(location, trust_remote_code=False, local_files_only=local)
        )

    def render(self, prompt: Prompt, style: PromptStyle = "chat") -> str:
        """The prompt text the server continues: the chat template's rendering, or plain text.

        A template that writes the BOS token's text (Gemma, Llama) would get a second BOS from the server,
        which adds one to every completion prompt for a model whose tokenizer adds it: the rendered one
        is left to the server.
        """
        if not (style == "chat" and getattr(self.tokenizer, "chat_template", None)):
            return render_plain(prompt, style)
        text = render_chat(self.tokenizer, prompt)
        bos = self.tokenizer.bos_token
        if bos and text.startswith(bos) and self._tokenizer_adds_bos:
            text = text[len(bos) :]
        return text

    @cached_property
    def _tokenizer_adds_bos(self) -> bool:
        bos_id = self.tokenizer.bos_token_id
        return bos_id is not None and self.tokenizer("a")["input_ids"][:1] == [bos_id]

    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> OpenAICompatibleCursor:
        return OpenAICompatibleCursor(self, self.render(prompt, style), sampling)

    def complete(
        self,
        prompt: str,
        max_tokens: int,
        *,
        logprobs: int | None = None,
        logit_bias: dict[int, float] | None = None,
        sampling: Sampling = GREEDY,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One completion. A sampled one carries a seed fixed by the sampling seed and the prompt, so the
        server draws the same tokens when asked the same thing (vLLM and llama.cpp honour ``seed``).
        ``extra`` adds server-specific fields to the request body."""
        payload: dict[str, Any] = {
            "model": self.model, "prompt": prompt, "max_tokens": max_tokens, "temperature": sampling.temperature
        } | (extra or {})
        if not sampling.greedy:
            payload["seed"] = sampling.key(self.model, prompt) % 2**31
        if logprobs is not None:
            payload["logprobs"] = logprobs
        if logit_bias:
            payload["logit_bias"] = {str(token): bias for token, bias in logit_bias.items()}
        try:
            answer = self.client.post("/v1/completions", payload)
        except ValueError as error:  # the body is not JSON: not an OpenAI-compatible server
            raise BackendError(
                f"{self.model_name}: the server's answer is not JSON ({error}); is it an OpenAI-compatible server?"
            ) from None
        except BackendError as error:
            if "HTTP 404" not in str(error):
                raise
            raise BackendError(
                f"{error} (the server serves no model {self.model!r}, or has no /v1/completions: check the served "
                "model name, --mentor-served-name on the command line)"
            ) from None
        try:
            choice, usage = answer["choices"][0], answer.get("usage")
        except (KeyError, IndexError, TypeError, AttributeError):
            choice = usage = None
        if not isinstance(choice, dict):
            raise BackendError(f"{self.model_name}: unexpected completion response {str(answer)[:200]}")
        return choice | {"usage": usage if isinstance(usage, dict) else {}}

    def count_tokens(self, text: str) -> int:
        """How many tokens the model reads for ``text`` (no special tokens added)."""
        return len(self.tokenizer.encode(text, add_special_tokens=False)) if text else 0

    def split_tokens(self, text: str) -> list[str]:
        """Generated text as the model's token texts, cut where the local tokenizer's tokens begin."""
        offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        starts = [0, *(start for start, _ in offsets[1:])]
        return [text[start:end] for start, end in zip(starts, [*starts[1:], len(text)], strict=True)]

    def close(self) -> None:
        self.client.close()


def check_server_url(base_url: object) -> None:
    """A server URL must be http(s) with a host: anything else fails when the backend is built, with a
    ``ConfigError``, rather than as a connection error at the first probe (which ``on_mentor_error="fallback"``
    would only record, leaving the generator to answer alone)."""
    import httpx

    try:
        url = httpx.URL(base_url) if isinstance(base_url, str) else None
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(
            f"the server URL {base_url!r} is not an http:// or https:// URL with a host; write it as "
            "http://HOST:PORT, for example http://127.0.0.1:8080"
        )


class OpenAICompatibleCursor:
    """A remote model has no cache of ours to move: each request sends the prompt and the response text.

    What it keeps instead is the read-ahead: tokens the server already wrote after ``_ahead_at``, and
    the text the server last held for this cursor (``_held``), to count what each request reads.
    """

    def __init__(self, backend: OpenAICompatibleBackend, prompt: str, sampling: Sampling = GREEDY) -> None:
        self.backend = backend
        self.prompt = prompt
        self.sampling = sampling
        self.tokens_read = 0
        self._held: str | None = None  # the response text (prompt excluded) the server last held for us
        self._ahead_at: str | None = None  # the response text the read-ahead tokens follow
        self._ahead: list[str] = []
        self._ahead_ended: str | None = None  # the server's finish_reason when it ended its text there
        self._chunk = WORD_CHUNK_TOKENS

    def _complete(
        self,
        text: str,
        max_tokens: int,
        *,
        logprobs: int | None = None,
        logit_bias: dict[int, float] | None = None,
        sampling: Sampling = GREEDY,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One request at ``prompt + text``, counting the tokens the server reads for it (module docstring)."""
        self.tokens_read += self.backend.count_tokens(self._unread(text))
        choice = self.backend.complete(
            self.prompt + text, max_tokens, logprobs=logprobs, logit_bias=logit_bias, sampling=sampling, extra=extra
        )
        self._held = text + _text(choice)
        return choice

    def _unread(self, text: str) -> str:
        """What a request at ``text`` makes the server read: all of it at first, then what it did not hold."""
        return self.prompt + text if self._held is None else text[common_prefix_length(self._held, text) :]

    def tokens_to_read(self, text: str) -> int:
        """How many tokens a call at ``text`` would read (``ForeseesReading``): none where the read-ahead
        already follows ``text``, else what the next request would send unread."""
        if self._ahead_at == text and (self._ahead or self._ahead_ended):
            return 0
        return self.backend.count_tokens(self._unread(text))

    def read_prompt(self, stop: threading.Event) -> None:
        """Have the server read the prompt now, so its prefix cache holds it when the first probe comes.

        The engine calls this on a background thread as a request starts (``engine.read_ahead``). A
        completion may not ask for nothing, so it asks for one token, with ``cache_prompt`` (llama.cpp's
        server keeps the prompt's cache for the slot; vLLM's automatic prefix caching needs no flag and
        ignores it); the token is thrown away and counted as read, beside the prompt, since it was not
        written for the answer. The request goes out unless ``stop`` is already set; a server call cannot
        be stopped midway.
        """
        if stop.is_set() or self._held is not None:
            return
        self._complete("", 1, extra={"cache_prompt": True})
        self.tokens_read += 1

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        word, tokens, generated = "", 0, 0
        confidence = None
        if with_confidence and max_tokens > 0:
            confidence, generated = self._read_with_confidence(text)
        while tokens < max_tokens:
            generated += self._read(text + word, max_tokens - tokens)
            if not self._ahead:
                if not tokens and self._ahead_ended != "stop":
                    raise BackendError(
                        f"{self.backend.model_name}: the server wrote nothing (finish_reason="
                        f"{self._ahead_ended!r}); the prompt probably fills its context window"
                    )
                return Piece(word, tokens, eos=self._ahead_ended == "stop", generated=generated, confidence=confidence)
            if tokens and self._ahead[0][:1].isspace():
                break
            word += self._take(1)[0]
            tokens += 1
        return Piece(word, tokens, generated=generated, confidence=confidence)

    def _read_with_confidence(self, text: str) -> tuple[Confidence, int]:
        """Ask for one token at ``text`` with its top log-probabilities; it becomes the read-ahead.

        Only this request carries ``logprobs`` (llama.cpp's server sorts the whole vocabulary in Python
        for every token it reports), and it asks for a single token; the read-ahead that follows grows
        from there as usual. Returns the confidence and the tokens the request generated.
        """
        choice = self._complete(text, 1, logprobs=CONFIDENCE_CANDIDATES, sampling=self.sampling)
        try:
            top: dict[str, float] = choice["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            top = {}
        if not top:
            raise BackendError(
                f"{self.backend.model_name}: the server returned no top log-probabilities; the uncertain "
                "probe policy needs a server that returns them (OpenAI completions' logprobs)"
            )
        self._ahead_at, self._ahead = text, self.backend.split_tokens(_text(choice))
        self._ahead_ended = _ended(choice)
        self._chunk = 1
        return _confidence(top.values()), _completion_tokens(choice, self._ahead)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        tokens, generated, ended = [], 0, None
        if self._ahead_at == text:  # the read-ahead first
            tokens = self._take(max_tokens)
            ended = None if self._ahead else self._ahead_ended
        wanted = max_tokens - len(tokens)
        if wanted > 0 and ended is None:
            choice = self._complete(text + "".join(tokens), wanted, sampling=self.sampling)
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
            return Piece(written[:cut], kept, generated=generated, stopped=True)
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
        choice = self._complete(text, asked, sampling=self.sampling)
        self._ahead_at, self._ahead = text, self.backend.split_tokens(_text(choice))
        self._ahead_ended = _ended(choice)
        return _completion_tokens(choice, self._ahead)

    def _take(self, count: int) -> list[str]:
        """Consume up to ``count`` read-ahead tokens; what is left follows the text they extend."""
        taken, self._ahead = self._ahead[:count], self._ahead[count:]
        self._ahead_at = (self._ahead_at or "") + "".join(taken)
        return taken

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        choice = self._complete(text, 1, logprobs=LABEL_CANDIDATES)
        try:
            top: dict[str, float] = choice["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            raise BackendError(f"{self.backend.model_name}: the server returned no top log-probabilities") from None
        # A label outside the top candidates is at most as likely as the least likely one listed.
        floor = min(top.values()) if top else float("-inf")
        return [max((lp for token, lp in top.items() if token.strip() == label), default=floor) for label in labels]

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        """The sum of the server's log-probabilities of the continuation's tokens, walked exactly.

        The continuation's tokens are those past the longest token prefix that ``text + continuation``
        shares with ``text`` (local tokenizer; the same rule as the local backends). From the start of
        the first unscored token, a run asks the server to write on, with generated-token logprobs: a
        forced run (the rest of the continuation, through a grammar) or, on a server that ignores
        grammars, a greedy run that doubles while the model writes the continuation itself. Every token
        it writes that is the continuation's next token is scored at once. Where it writes something
        else (or ends), one request forces the continuation's token with a logit bias; servers report
        the unbiased logprob of the token they were made to pick.
        """
        whole = text + continuation
        tokenizer = self.backend.tokenizer
        encoded = tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True)
        ids: list[int] = encoded["input_ids"]
        start = common_prefix_length(tokenizer.encode(text, add_special_tokens=False), ids)
        scored = ids[start:]
        if not scored:
            return ContinuationScore(0.0, 0)
        if not (self.prompt or start):
            raise BackendError(f"{self.backend.model_name}: a continuation needs some text before it to be scored")
        cuts = [begin for begin, _ in encoded["offset_mapping"][start:]] + [len(whole)]
        if any(later <= earlier for earlier, later in itertools.pairwise(cuts)):
            raise BackendError(
                f"{self.backend.model_name}: the continuation has tokens inside one character; a text prompt "
                "cannot place the server between them"
            )
        pieces = [whole[begin:end] for begin, end in itertools.pairwise(cuts)]
        total, done, run = 0.0, 0, SCORE_RUN_TOKENS
        prompt_tokens_at_start: int | None = None  # the server's prompt length where scoring began
        while done < len(scored):
            forced = self.backend.forces_text
            asked = len(scored) - done if forced else min(run, len(scored) - done)
            choice = self._scoring_run(whole, cuts[done], asked, forced)
            prompt_tokens_at_start = self._check_position(choice, done, prompt_tokens_at_start)
            written, logprobs = _token_logprobs(choice, self.backend.model_name)
            matched = 0
            for token, logprob in zip(written, logprobs, strict=True):  # a run never asks past the continuation's end
                if token != pieces[done + matched]:
                    break
                total += logprob
                matched += 1
            done += matched
            run = run * 2 if matched == asked else SCORE_RUN_TOKENS
            if matched < asked:  # the model wrote something else here, or ended: force the token
                choice = self._complete(whole[: cuts[done]], 1, logprobs=1, logit_bias={scored[done]: FORCE_BIAS})
                self._check_position(choice, done, prompt_tokens_at_start)
                written, logprobs = _token_logprobs(choice, self.backend.model_name)
                if written[:1] != [pieces[done]]:
                    raise BackendError(
                        f"{self.backend.model_name}: the server did not follow the logit bias (asked for "
                        f"{pieces[done]!r}, got {written[:1]!r}); it cannot score a continuation exactly"
                    )
                total += logprobs[0]
                done += 1
        return ContinuationScore(total, len(scored))

    def _scoring_run(self, whole: str, at: int, asked: int, forced: bool) -> dict[str, Any]:
        """The server writing on from ``whole[:at]``, ``asked`` tokens with their logprobs; forced to write
        ``whole[at:]`` when ``forced``. A server that rejects the grammar or writes past it is marked as
        one that does not force text (``forces_text``)."""
        rest = whole[at:]
        if not forced:
            return self._complete(whole[:at], asked, logprobs=1)
        try:
            choice = self._complete(whole[:at], asked, logprobs=1, extra={"grammar": literal_grammar(rest)})
        except BackendError as error:
            if not any(f"HTTP {status}" in str(error) for status in (400, 422)):
                raise
            self.backend.forces_text = False  # the server refuses the field: walk without it
            return self._complete(whole[:at], asked, logprobs=1)
        if not (_text(choice) and rest.startswith(_text(choice))):
            self.backend.forces_text = False  # it wrote what it liked: the reply is a greedy run
        return choice

    def _check_position(self, choice: dict[str, Any], done: int, at_start: int | None) -> int | None:
        """The server's prompt length where scoring began; raises if this request is not ``done`` past it.

        Each request sends the text up to a token boundary of the local tokenizer. If the server cut
        that text into a different number of tokens, its logprobs would belong to other positions.
        A server that reports no usage cannot be checked.
        """
        prompt_tokens = choice["usage"].get("prompt_tokens")
        if prompt_tokens is None:
            return at_start
        if at_start is None:
            return int(prompt_tokens) - done
        if int(prompt_tokens) != at_start + done:
            raise BackendError(
                f"{self.backend.model_name}: the server tokenizes the scored text differently from the local "
                f"tokenizer ({prompt_tokens} prompt tokens where {at_start + done} were expected)"
            )
        return at_start

    def hidden_state(self, text: str) -> list[float]:
        raise BackendError(f"{self.backend.model_name}: a remote model does not expose hidden states")

    def close(self) -> None:
        pass


def literal_grammar(text: str) -> str:
    """A llama.cpp grammar (GBNF) that accepts exactly ``text``.

    Every character but ASCII letters, digits and spaces is written as a code-point escape, so no text
    (quotes, backslashes, newlines, anything outside ASCII) can end the literal early or change its meaning.
    """
    def escaped(character: str) -> str:
        if character.isascii() and (character.isalnum() or character == " "):
            return character
        point = ord(character)
        return f"\\u{point:04X}" if point <= 0xFFFF else f"\\U{point:08X}"

    return 'root ::= "' + "".join(map(escaped, text)) + '"'


def _confidence(top_logprobs: Any) -> Confidence:
    """A ``Confidence`` from the server's top log-probabilities at one position.

    Only the top candidates are listed, so the entropy is estimated: the listed tokens count exactly,
    and the mass left over is treated as one more token. That is a lower bound of the true entropy
    (spreading the leftover over many tokens can only raise it); with twenty candidates the leftover
    is small wherever the model is fairly sure, which is where a threshold on entropy decides.
    """
    probabilities = sorted((math.exp(logprob) for logprob in top_logprobs), reverse=True)
    leftover = max(0.0, 1.0 - sum(probabilities))
    entropy = -sum(p * math.log(p) for p in [*probabilities, leftover] if p > 0)
    runner_up = probabilities[1] if len(probabilities) > 1 else 0.0
    return Confidence(probabilities[0], runner_up, entropy)


def _token_logprobs(choice: dict[str, Any], model_name: str) -> tuple[list[str], list[float]]:
    """The generated tokens' texts and log-probabilities from a completion asked with ``logprobs``."""
    try:
        found = choice["logprobs"]
        return list(found["tokens"]), [float(value) for value in found["token_logprobs"]]
    except (KeyError, TypeError, ValueError):
        raise BackendError(f"{model_name}: the server returned no token log-probabilities") from None


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
