"""What the two in-process backends share: a cursor whose KV cache follows the response text.

``transformers.py`` (torch) and ``llama_cpp.py`` (llama.cpp's C API) run different engines but must make
the same token-level decisions: a run's text, its token accounting and its sampled draws may not depend on
which backend wrote it. So ``LocalCursor`` holds those decisions once:

- the cache rule: asked at a response text, tokenize ``prompt + text``, keep the longest common token
  prefix of what the cache holds, crop the rest and feed only the new tail, counting it in ``tokens_read``;
  committing a word, rolling back a rejected lookahead and appending a verifier's question all become
  "crop a little, feed a little";
- the prompt's batches: a model's arithmetic gives a token slightly different numbers in a batch of
  another size (llama.cpp's quantized kernels, torch's blocked matrix products), so the prompt is always
  fed in the same batches, ``READ_PROMPT_STEP_TOKENS`` long from its start and ending at its end, whether
  it is read ahead in steps or with the first words of the response; that keeps greedy answers the same
  with and without reading ahead. It is also what lets a request take over an earlier one's cache: the
  prompt tokens that whole batches covered hold exactly what a new read of the same tokens would compute,
  so a cursor that finds them in its cache (``adopt_cache``, llama.cpp's prefix cache) reads only the rest;
- the decode loop: word boundaries, end-of-turn tokens, stop strings, characters split across tokens;
- picking a token (greedy, or the inverse-CDF draw of ``Sampling.uniform``), the confidence at a word's
  first token, label log-probabilities and continuation scores;
- under a grammar (``backends.grammar``), the tokens it forbids masked before each pick (``GrammarMatcher``).

A backend supplies only what differs: its tokenizer (``_encode``, ``_decode_ids``), one forward pass over
new ids (``_forward``), cropping its cache (``_crop_cache``), and hidden states where it has them.

Logits are numpy arrays here. llama.cpp writes them into a C buffer, and each decode hands its cursor one
copy of the rows it asked for (its context may be shared, ``backends.llama_batch``); torch's output is
converted once per forward pass (``.numpy()`` shares a CPU tensor's memory; on a GPU it is one
device-to-host copy of the rows asked for, small beside the forward pass). All arithmetic on logits is
then one numpy implementation in float64, so both backends pick the same token and report the same
confidence on the same logits.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import numpy as np

from mentorcollab_langchain.backends.base import Confidence, ContinuationScore, Piece
from mentorcollab_langchain.backends.grammar import with_special_tags
from mentorcollab_langchain.backends.sampling import Sampling
from mentorcollab_langchain.errors import BackendError, ContextTooLongError, InvalidPromptError, InvalidSchemaError

# The prompt's batch length (module docstring). Reading ahead (``read_prompt``) looks between batches
# whether the run was closed, so closing waits at most one batch, and one batch is still large enough to
# read efficiently (measured on the 1.5B mentor: 64-token batches within noise of 512-token ones).
READ_PROMPT_STEP_TOKENS = 64


class LocalModel(Protocol):
    """What the shared cursor reads from a loaded model: its name and where its tokens start words."""

    @property
    def name(self) -> str: ...

    @property
    def whitespace_start(self) -> list[bool]: ...


LoadedT = TypeVar("LoadedT", bound=LocalModel)
KeyT = TypeVar("KeyT", bound=Hashable)
ValueT = TypeVar("ValueT")


class LoadOnce(Generic[KeyT, ValueT]):
    """Loads each model once per process and shares it, with a lock per model.

    A request for a model already loaded never waits, and one model's slow first load never blocks the
    loading of another.
    """

    def __init__(self) -> None:
        self._loaded: dict[KeyT, ValueT] = {}
        self._locks: dict[KeyT, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(self, key: KeyT, load: Callable[[], ValueT]) -> ValueT:
        if key in self._loaded:
            return self._loaded[key]
        with self._locks_lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._loaded:
                self._loaded[key] = load()
            return self._loaded[key]

    def keys(self) -> set[KeyT]:
        """The models loaded so far."""
        return set(self._loaded)


GRAMMAR_TOKENIZERS: LoadOnce[tuple[str, str], Any] = LoadOnce()  # llguidance vocabularies, by backend and model


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities in float64 from one row (or rows) of logits."""
    wide = logits.astype(np.float64)
    top = wide.max(axis=-1, keepdims=True)
    return wide - top - np.log(np.exp(wide - top).sum(axis=-1, keepdims=True))


def token_logprob(logits: np.ndarray, token: int) -> float:
    """``log_softmax(logits)[token]`` for one row, the same arithmetic without a vocabulary of results."""
    wide = logits.astype(np.float64)
    top = wide.max()
    return float(wide[token] - top - np.log(np.exp(wide - top).sum()))


def confidence_of(logits: np.ndarray) -> Confidence:
    """The top two probabilities and the entropy of the next-token distribution.

    A token masked with a logit of -inf (by the model, or by a grammar) has probability 0 and adds 0 to
    the entropy, not 0 * -inf.
    """
    logprobs = log_softmax(logits)
    probabilities = np.exp(logprobs)
    runner_up, top = np.partition(probabilities, -2)[-2:]
    entropy = -float(np.sum(probabilities * np.where(probabilities > 0, logprobs, 0.0)))
    return Confidence(float(top), float(runner_up), entropy)


def common_prefix_length(a: Sequence, b: Sequence) -> int:
    """How many leading items (token ids, or characters) ``a`` and ``b`` share."""
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


class GrammarMatcher:
    """Where one cursor's response stands in the grammar, and which tokens may come next.

    ``tokenizer`` is llguidance's view of the model's vocabulary (``llguidance.hf.from_tokenizer`` or
    ``llguidance.llamacpp.lltokenizer_from_vocab``), with the model's end tokens as its end of sequence,
    so the end is allowed exactly where the grammar is complete. A cursor is asked at a response text, so
    the matcher follows the response tokens in its cache as the cache itself does: it keeps what they share
    with the tokens it has consumed, rolls back the rest and consumes the new ones.
    """

    def __init__(self, tokenizer: Any, grammar: str, vocabulary_size: int) -> None:
        import llguidance

        def knows_special_token(tag: str) -> bool:
            alone = llguidance.LLMatcher.grammar_from_lark(f"start: {tag}")
            return not llguidance.LLMatcher(tokenizer, alone, log_level=0).is_error()

        grammar = with_special_tags(grammar, knows_special_token)
        self._matcher = llguidance.LLMatcher(tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
        if self._matcher.is_error():
            raise InvalidSchemaError(f"the grammar does not compile: {self._matcher.get_error()}")
        self._consumed: list[int] = []
        self._size = vocabulary_size

    def _follow(self, response_ids: Sequence[int]) -> None:
        """Bring the matcher to ``response_ids``: keep the common prefix, roll back and consume the rest."""
        common = common_prefix_length(self._consumed, response_ids)
        if common < len(self._consumed):
            self._matcher.rollback(len(self._consumed) - common)
            del self._consumed[common:]
        new = list(response_ids[common:])
        taken = self._matcher.try_consume_tokens(new) if new else 0
        self._consumed.extend(new[:taken])
        if taken < len(new):
            raise BackendError(
                "the answer so far leaves the grammar at token "
                f"{common + taken} of {len(response_ids)}; only text the grammar accepts can be continued under it"
            )

    def allowed(self, response_ids: Sequence[int]) -> np.ndarray:
        """A boolean row over the vocabulary: which tokens may follow ``response_ids``."""
        self._follow(response_ids)
        bias = np.frombuffer(self._matcher.compute_logit_bias(), dtype=np.uint8)
        allowed = np.zeros(self._size, dtype=bool)
        width = min(self._size, len(bias))
        allowed[:width] = bias[:width] > 0
        return allowed

    def accepted(self, response_ids: Sequence[int]) -> int:
        """How many of ``response_ids``, from the start of the answer, the grammar accepts."""
        self._matcher.reset()
        self._consumed = []
        return self._matcher.validate_tokens(list(response_ids))


def masked(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The logits with every forbidden token at -inf (a new array: the backend's buffer is left alone)."""
    return np.where(allowed, logits, -np.inf)


class LocalCursor(ABC, Generic[LoadedT]):
    """One request's KV cache on one in-process model, moved by text (see the module docstring)."""

    # Appended to "would need N tokens of context" errors: how this backend gets a longer context.
    context_advice: ClassVar[str] = ""

    def __init__(
        self,
        loaded: LoadedT,
        prompt_ids: list[int],
        *,
        end_ids: frozenset[int],
        context_length: int,
        sampling: Sampling,
        grammar: str | None = None,
    ) -> None:
        if not prompt_ids:  # a model predicts from something; an empty raw prompt with no BOS is nothing
            raise InvalidPromptError(
                f"{loaded.name}: the prompt holds no tokens (an empty raw prompt on a tokenizer that adds no "
                "BOS); give some text"
            )
        self._model = loaded
        self._end_ids = end_ids  # tokens that end an answer: end-of-sequence and end-of-turn markers
        self.context_length = context_length
        self.sampling = sampling
        self.prompt_ids = prompt_ids
        # Sampled draws follow the prompt as well as the response text (``backends.sampling``).
        prompt_bytes = np.asarray(prompt_ids, dtype=np.int64).tobytes()
        self._prompt_identity = hashlib.blake2b(prompt_bytes, digest_size=16).hexdigest()
        self.cached_ids: list[int] = []
        self._logits: np.ndarray | None = None  # next-token logits after cached_ids
        # The logprob of each cached id after the ids before it, where a forward pass gave its row (None
        # where not): what the model wrote itself is then scored without reading it again.
        self._cached_logprobs: list[float | None] = []
        self.tokens_read = 0
        self.tokens_cached = 0  # prompt tokens taken over from an earlier request's cache (``adopt_cache``)
        self.grammar = grammar
        self._matcher: GrammarMatcher | None = None
        if grammar is not None:
            tokenizer = GRAMMAR_TOKENIZERS.get((type(self).__name__, loaded.name), self._grammar_tokenizer)
            self._matcher = GrammarMatcher(tokenizer, grammar, self._vocabulary_size())

    # -- what each backend supplies ------------------------------------------------------------

    @abstractmethod
    def _encode(self, text: str) -> list[int]:
        """The token ids of ``text`` alone, without special tokens added."""

    @abstractmethod
    def _decode_ids(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; a character split across tokens reads as U+FFFD until it is complete."""

    @abstractmethod
    def _forward(self, ids: list[int], outputs: int, hidden: bool) -> np.ndarray:
        """Run the model over ``ids`` right after ``cached_ids``: the logits after the last ``outputs`` ids.

        One row per output; a row may be a view that the next forward pass overwrites. The caller then adds
        ``ids`` to ``cached_ids``. With ``hidden`` the backend keeps the last position's hidden state (only
        backends that expose one are asked).
        """

    @abstractmethod
    def _crop_cache(self, keep: int) -> int:
        """Remove cached positions from ``keep`` on; how many stay (``keep``, or 0 where it had to start over)."""

    @abstractmethod
    def _grammar_tokenizer(self) -> Any:
        """llguidance's view of this model's vocabulary, with its end tokens as end of sequence (built once
        per model: it reads the whole vocabulary)."""

    @abstractmethod
    def _vocabulary_size(self) -> int:
        """How many logits a forward pass gives (the vocabulary, with any padding rows)."""

    # -- the cache -----------------------------------------------------------------------------

    def token_ids(self, text: str) -> list[int]:
        """The token ids a model sees for the response ``text``: prompt ids, then the text's own ids."""
        return self.prompt_ids + self._encode(text)

    def _move_to(self, target: list[int], outputs: int = 1, hidden: bool = False) -> np.ndarray:
        """Bring the cache to exactly ``target`` and return the next-token logits there.

        With ``outputs`` above 1, at least that many of the last tokens are fed again and the logits
        after each of them are returned, one row per token (for scoring a continuation). A hidden state
        comes only out of a forward pass, so with ``hidden`` the last token is fed again even if cached.
        """
        keep = self._kept_for(target, outputs, hidden)
        if keep is None:
            return self._logits
        self._crop(keep)
        fed = target[len(self.cached_ids) :]
        self.tokens_read += len(fed)
        return self._feed_in_batches(fed, outputs, hidden)

    def _kept_for(self, target: list[int], outputs: int = 1, hidden: bool = False) -> int | None:
        """How many cached tokens ``_move_to(target)`` keeps before feeding the rest; None where the cache is at
        ``target`` already, with its logits in hand. At least ``outputs`` tokens are fed to get their rows."""
        common = common_prefix_length(self.cached_ids, target)
        at_target = common == len(target) == len(self.cached_ids)
        if at_target and self._logits is not None and outputs == 1 and not hidden:
            return None
        return min(common, len(target) - outputs)

    def tokens_to_read(self, text: str) -> int:
        """How many tokens a call at the response ``text`` would read (``ForeseesReading``)."""
        target = self.token_ids(text)
        keep = self._kept_for(target)
        return 0 if keep is None else len(target) - keep

    def _prompt_batch_ends(self) -> list[int]:
        """Where the prompt's batches end: every ``READ_PROMPT_STEP_TOKENS`` from its start, and its end."""
        return [*range(READ_PROMPT_STEP_TOKENS, len(self.prompt_ids), READ_PROMPT_STEP_TOKENS), len(self.prompt_ids)]

    def _feed_in_batches(self, ids: list[int], outputs: int, hidden: bool) -> np.ndarray:
        """``_feed``, with ``ids`` cut where the prompt's batches end (module docstring).

        Each batch asks for the rows of ``outputs`` it holds, and at least its last row, as reading ahead
        does: the same batch then does the same arithmetic whichever path fed it.
        """
        start = len(self.cached_ids)
        ends = [end - start for end in self._prompt_batch_ends() if start < end < start + len(ids)] + [len(ids)]
        earlier_rows = []  # wanted rows from before the last batch (scoring from the response's first token)
        for begin, end in itertools.pairwise([0, *ends]):
            after = len(ids) - end  # tokens fed after this batch
            rows = self._feed(ids[begin:end], max(1, min(end - begin, outputs - after)), hidden and not after)
            if after and outputs > after:
                earlier_rows.append(np.array(rows, ndmin=2)[-(outputs - after) :])  # a copy: rows may be a view
        return np.concatenate([*earlier_rows, np.atleast_2d(rows)]) if earlier_rows else rows

    def reusable_ids(self) -> list[int]:
        """The cached prompt tokens a later request may take over: those that whole prompt batches covered.

        A prompt's last, shorter batch is left out: a longer prompt that starts with this one reads those
        tokens in a full batch, with other arithmetic.
        """
        covered = common_prefix_length(self.cached_ids, self.prompt_ids)
        return self.cached_ids[: covered - covered % READ_PROMPT_STEP_TOKENS]

    def adopt_cache(self, held: int) -> None:
        """Take over the first ``held`` prompt tokens that the backend's cache holds from an earlier request.

        Only whole prompt batches are taken, and never the whole prompt (the last token is read to get the
        next-token logits); the backend crops the rest (all of it when ``held`` is 0). What is taken counts
        in ``tokens_cached``, not in ``tokens_read``.
        """
        usable = min(held, len(self.prompt_ids) - 1)
        kept = self._crop_cache(usable - usable % READ_PROMPT_STEP_TOKENS)
        self.cached_ids = self.prompt_ids[:kept]
        self._cached_logprobs = [None] * kept
        self._logits = None
        self.tokens_cached = kept

    def read_prompt(self, stop: threading.Event) -> None:
        """Bring the cache to the prompt alone, batch by batch, unless it holds the whole prompt already.

        The engine calls this on a background thread as a request starts (``engine.read_ahead``), so the
        mentor reads a long prompt while the generator writes; the first probe then feeds only the response.
        It stops between batches once ``stop`` is set; what it read stays cached, and the next call goes on
        from there by the usual cache rule. A cache that already holds the prompt (and maybe some response)
        is left alone, never cropped back.
        """
        start = common_prefix_length(self.cached_ids, self.prompt_ids)
        for end in self._prompt_batch_ends():
            if stop.is_set():
                return
            if end > start:
                self._move_to(self.prompt_ids[:end])

    def next_token_logits(self, text: str) -> np.ndarray:
        """A copy of the next-token logits after ``text`` (used by tests to compare with a recompute)."""
        return self._move_to(self.token_ids(text)).copy()

    def _crop(self, keep: int) -> None:
        if keep >= len(self.cached_ids):
            return
        self.cached_ids = self.cached_ids[: self._crop_cache(keep)]
        self._cached_logprobs = self._cached_logprobs[: len(self.cached_ids)]
        self._logits = None

    def _feed(self, ids: list[int], outputs: int = 1, hidden: bool = False) -> np.ndarray:
        """Feed ``ids`` after the cache; the logits after the last ``outputs`` of them (one row if 1)."""
        total = len(self.cached_ids) + len(ids)
        if total > self.context_length:
            raise ContextTooLongError(
                f"{self._model.name} would need {total} tokens of context; it holds {self.context_length}"
                f"{self.context_advice}"
            )
        known: list[float | None] = [None] * len(ids)
        if self._logits is not None:  # the row after the cache predicts the first id
            known[0] = token_logprob(self._logits, ids[0])
        rows = self._forward(ids, outputs, hidden)
        first_row = len(ids) - outputs  # rows[k] is the row after ids[first_row + k]
        for index in range(max(first_row + 1, 1), len(ids)):
            known[index] = token_logprob(rows[index - first_row - 1], ids[index])
        self.cached_ids.extend(ids)
        self._cached_logprobs.extend(known)
        self._logits = rows[-1]
        return self._logits if outputs == 1 else rows

    # -- the operations the engine uses --------------------------------------------------------

    def _decode(
        self, text: str, max_tokens: int, *, one_word: bool, stop: Sequence[str] = (), with_confidence: bool = False
    ) -> Piece:
        """The decode loop: tokens from ``text``, one forward pass per token.

        A word (``one_word``) ends before its next token that starts with whitespace. ``max_tokens`` is a
        hard limit: if it falls inside a character split across tokens, that character's tokens are left
        out (counted as generated), so a piece never ends inside a character nor runs past the limit.
        """
        logits = self._allowed(self._move_to(self.token_ids(text)))
        confidence = confidence_of(logits) if with_confidence else None
        produced: list[int] = []
        decoded = ""
        while len(produced) < max_tokens:
            token = self._pick(logits, text + decoded)
            if token in self._end_ids:
                return Piece(decoded, len(produced), eos=True, confidence=confidence)
            if one_word and produced and self._model.whitespace_start[token]:
                break
            produced.append(token)
            logits = self._allowed(self._feed([token]))
            decoded = self._decode_ids(produced)
            if stop and any(marker in decoded for marker in stop):
                cut = min(decoded.index(marker) for marker in stop if marker in decoded)
                kept = next(
                    count for count in range(len(produced) + 1) if len(self._decode_ids(produced[:count])) >= cut
                )
                return Piece(decoded[:cut], kept, generated=len(produced), confidence=confidence, stopped=True)
        if decoded.endswith("\ufffd"):  # the limit fell inside a character: keep the whole ones
            kept = max(
                count for count in range(len(produced)) if not self._decode_ids(produced[:count]).endswith("\ufffd")
            )
            return Piece(self._decode_ids(produced[:kept]), kept, generated=len(produced), confidence=confidence)
        return Piece(decoded, len(produced), confidence=confidence)

    def _allowed(self, logits: np.ndarray) -> np.ndarray:
        """The logits after the cache, with the tokens the grammar forbids there masked (if there is one)."""
        if self._matcher is None:
            return logits
        return masked(logits, self._matcher.allowed(self.cached_ids[len(self.prompt_ids) :]))

    def grammar_prefix_length(self, text: str) -> int:
        """How many characters at the start of the response ``text`` the grammar accepts (all, without one).

        The engine keeps a mentor's words and segments to this, so text from a mentor that does not follow
        the grammar itself (a remote one) never enters a constrained answer.
        """
        if self._matcher is None:
            return len(text)
        ids = self._encode(text)
        accepted = self._matcher.accepted(ids)
        return len(text) if accepted == len(ids) else len(self._decode_ids(ids[:accepted]))

    def _pick(self, logits: np.ndarray, text: str) -> int:
        """The most likely token, or the one the draw for ``text`` lands on at the sampling temperature."""
        if self.sampling.greedy:
            return int(logits.argmax())
        scaled = np.asarray(logits, dtype=np.float64) / self.sampling.temperature
        probabilities = np.exp(scaled - scaled.max())
        cumulative = np.cumsum(probabilities / probabilities.sum())
        return min(int(np.searchsorted(cumulative, self.draw(text))), len(cumulative) - 1)

    def draw(self, text: str) -> float:
        """The sampling draw in [0, 1) for the token after ``text`` in this request (prompt included)."""
        return self.sampling.uniform(self._model.name, f"{self._prompt_identity}\0{text}")

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        return self._decode(text, max_tokens, one_word=True, with_confidence=with_confidence)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        return self._decode(text, max_tokens, one_word=False, stop=stop)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        logprobs = log_softmax(self._move_to(self.token_ids(text)))
        first_tokens = [self._encode(label)[0] for label in labels]
        return [float(logprobs[token]) for token in first_tokens]

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        """Add up the log-probabilities of the continuation's tokens after ``text``.

        The continuation's tokens are those past the longest token prefix that ``text + continuation``
        shares with ``text`` alone, so a token that spans the boundary is scored as the continuation's.
        Tokens the cache holds with their logprobs (the model wrote them: a mentor scoring its own
        lookahead) are not read again; otherwise ``text + continuation`` is fed once, from before the
        first scored token, and the pass keeps their logprobs (``_feed``).
        """
        target = self.token_ids(text + continuation)
        start = common_prefix_length(self.token_ids(text), target)
        scored = target[start:]
        if not scored:
            return ContinuationScore(0.0, 0)
        if start == 0:
            raise ContextTooLongError(f"{self._model.name}: a continuation needs some text before it to be scored")
        held = self._cached_logprobs[start : len(target)]
        if common_prefix_length(self.cached_ids, target) < len(target) or None in held:
            self._move_to(target, outputs=len(scored) + 1)  # the row before each scored token predicts it
            held = self._cached_logprobs[start : len(target)]
        return ContinuationScore(float(np.sum(held)), len(scored))

    def _forget_cache(self) -> None:
        """Hold nothing: the backend's cache is empty (freed, or emptied by the backend itself)."""
        self.cached_ids = []
        self._cached_logprobs = []
        self._logits = None

    def close(self) -> None:
        """Forget the cached state; a backend frees its cache first."""
        self._forget_cache()
