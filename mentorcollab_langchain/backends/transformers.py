"""Local models through transformers and torch, with a per-request KV cache that follows the text.

A cursor holds the token ids whose keys and values are in its cache. When it is asked at a new response
text it tokenizes ``prompt + text``, keeps the longest common token prefix, crops the cache to it and
feeds only the rest. Committing a word, rolling back a rejected lookahead and appending the verifier's
question all become "crop a little, feed a little"; nothing re-encodes the whole prompt per token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from mentorcollab_langchain.backends.base import Confidence, ContinuationScore, Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.prompts import render_chat, render_plain
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.words import whitespace_start_table
from mentorcollab_langchain.errors import ConfigError, ContextTooLongError
from mentorcollab_langchain.models.registry import DEFAULT_GENERATOR, resolve_model

# End-of-turn markers that chat models emit to end an answer, even where the converted generation
# config names only one of them (Qwen's GGUF lists <|im_end|> but not <|endoftext|>).
_END_MARKERS = ("<|endoftext|>", "<|im_end|>", "<end_of_turn>", "<|eot_id|>", "</s>", "<eos>")

# How many extra tokens a segment may take to finish a character split across tokens.
_MAX_TOKENS_TO_COMPLETE_CHARACTER = 4


def pick_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in {"cpu", "cuda", "mps"} and not device.startswith("cuda:"):
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """bfloat16 where it is both faster and accurate (CUDA, and CPUs like ours, see MODELS.md).

    float16 is allowed when asked for but never chosen: it overflows in Gemma 3. No int8 path exists
    on purpose: dynamic int8 quantization ruins the mentor's answers.
    """
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.float32 if device.type == "mps" else torch.bfloat16
    if dtype not in names:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return names[dtype]


@dataclass
class LoadedModel:
    """Weights and tokenizer facts shared by every cursor (and every backend) on the same model."""

    name: str
    network: Any
    tokenizer: Any
    device: torch.device
    whitespace_start: list[bool]
    eos_ids: frozenset[int]
    context_length: int

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


_LOADED: dict[tuple[str, str, str], LoadedModel] = {}
_LOADED_LOCK = threading.Lock()


def load_model(
    name: str, device: str = "auto", dtype: str = "auto", report: Callable[[str], None] = lambda message: None
) -> LoadedModel:
    """Load a model once per (name, device, dtype) in this process and share it."""
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    key = (name, str(torch_device), str(torch_dtype))
    with _LOADED_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(name, torch_device, torch_dtype, report)
        return _LOADED[key]


def _load(name: str, device: torch.device, dtype: torch.dtype, report: Callable[[str], None]) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, local = resolve_model(name, report)
    report(f"loading {name} on {device} as {str(dtype).removeprefix('torch.')}")
    # Never run code shipped with a model, and never unpickle weights: safetensors only.
    options = {"trust_remote_code": False, "local_files_only": local}
    tokenizer = AutoTokenizer.from_pretrained(location, **options)
    network = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, use_safetensors=True, **options)
    network.to(device).eval()
    eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = network.generation_config.eos_token_id
    eos_ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    eos_ids |= {tokenizer.convert_tokens_to_ids(marker) for marker in _END_MARKERS if marker in tokenizer.all_special_tokens}
    vocabulary = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    return LoadedModel(
        name=name,
        network=network,
        tokenizer=tokenizer,
        device=device,
        whitespace_start=whitespace_start_table(vocabulary),
        eos_ids=frozenset(eos_ids),
        context_length=int(getattr(network.config, "max_position_embeddings", 0) or 1 << 30),
    )


class TransformersBackend:
    """A local model (packaged name, Hugging Face id or folder) loaded lazily on first use."""

    def __init__(
        self,
        model: str = DEFAULT_GENERATOR,
        *,
        device: str = "auto",
        dtype: str = "auto",
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        pick_dtype(dtype, pick_device(device))  # fail now, not at first use, on a bad device or dtype
        self.model = model
        self.device = device
        self.dtype = dtype
        self._report = report

    @property
    def model_name(self) -> str:
        return self.model

    @property
    def loaded(self) -> LoadedModel:
        return load_model(self.model, self.device, self.dtype, self._report)

    def prompt_ids(self, prompt: Prompt, style: PromptStyle = "chat") -> list[int]:
        """Token ids of the rendered prompt, ending where the assistant's answer begins."""
        loaded = self.loaded
        if style == "chat" and loaded.has_chat_template:
            return loaded.tokenizer.encode(render_chat(loaded.tokenizer, prompt), add_special_tokens=False)
        # Plain text gets the tokenizer's own special tokens (Gemma needs its <bos>).
        return loaded.tokenizer.encode(render_plain(prompt, style), add_special_tokens=True)

    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> TransformersCursor:
        prompt_ids = self.prompt_ids(prompt, style)
        if len(prompt_ids) >= self.loaded.context_length:
            raise ContextTooLongError(
                f"the prompt is {len(prompt_ids)} tokens for {self.model}, whose context holds "
                f"{self.loaded.context_length}"
            )
        return TransformersCursor(self.loaded, prompt_ids, sampling)


def _confidence(logits: torch.Tensor) -> Confidence:
    """The top two probabilities and the entropy of the next-token distribution."""
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    top = torch.topk(logprobs, 2).values.exp()
    entropy = -(logprobs.exp() * logprobs).nansum()
    return Confidence(float(top[0]), float(top[1]), float(entropy))


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    length = min(len(a), len(b))
    for index in range(length):
        if a[index] != b[index]:
            return index
    return length


class TransformersCursor:
    """One request's KV cache on one model, moved by text (see the module docstring)."""

    def __init__(self, loaded: LoadedModel, prompt_ids: list[int], sampling: Sampling = GREEDY) -> None:
        from transformers import DynamicCache

        self._model = loaded
        self.sampling = sampling
        self._new_cache = lambda: DynamicCache(config=loaded.network.config)
        self.prompt_ids = prompt_ids
        self.cached_ids: list[int] = []
        self._cache = self._new_cache()
        self._logits: torch.Tensor | None = None  # next-token logits after cached_ids
        self._hidden: torch.Tensor | None = None
        self.forward_calls = 0
        self.tokens_read = 0

    # -- the cache -----------------------------------------------------------------------------

    def token_ids(self, text: str) -> list[int]:
        """The token ids a model sees for the response ``text``: prompt ids, then the text's own ids."""
        return self.prompt_ids + self._model.tokenizer.encode(text, add_special_tokens=False)

    def _move_to(self, target: list[int], need_hidden: bool = False, logits_to_keep: int = 1) -> torch.Tensor:
        """Bring the cache to exactly ``target`` and return the next-token logits there.

        With ``logits_to_keep`` above 1, at least that many of the last tokens are fed again and the
        logits after each of them are returned, one row per token (for scoring a continuation).
        """
        common = _common_prefix_length(self.cached_ids, target)
        if common == len(target) == len(self.cached_ids) and self._logits is not None and logits_to_keep == 1:
            if not need_hidden:
                return self._logits
        keep = min(common, len(target) - logits_to_keep)  # feed at least what we need the output of
        self._crop(keep)
        fed = target[len(self.cached_ids) :]
        self.tokens_read += len(fed)
        return self._feed(fed, need_hidden, logits_to_keep)

    def _crop(self, keep: int) -> None:
        if keep >= len(self.cached_ids):
            return
        try:
            self._cache.crop(-(len(self.cached_ids) - keep))  # a negative count removes that many tokens
            self.cached_ids = self.cached_ids[:keep]
        except RuntimeError:
            # Sliding-window layers past their window cannot roll back: start over from the text.
            self._cache = self._new_cache()
            self.cached_ids = []

    def _feed(self, ids: list[int], need_hidden: bool = False, logits_to_keep: int = 1) -> torch.Tensor:
        total = len(self.cached_ids) + len(ids)
        if total > self._model.context_length:
            raise ContextTooLongError(
                f"{self._model.name} would need {total} tokens of context; it holds {self._model.context_length}"
            )
        with torch.inference_mode():
            output = self._model.network(
                input_ids=torch.tensor([ids], device=self._model.device),
                cache=self._cache,
                use_cache=True,
                logits_to_keep=logits_to_keep,
                output_hidden_states=need_hidden,
            )
        self.forward_calls += 1
        self.cached_ids.extend(ids)
        self._logits = output.logits[0, -1].float()
        self._hidden = output.hidden_states[-1][0, -1].float() if need_hidden else None
        return output.logits[0].float() if logits_to_keep > 1 else self._logits

    def next_token_logits(self, text: str) -> torch.Tensor:
        """Next-token logits after ``text`` (used by tests to compare with a full recompute)."""
        return self._move_to(self.token_ids(text))

    # -- the operations the engine uses --------------------------------------------------------

    def _decode(
        self, text: str, max_tokens: int, *, one_word: bool, stop: Sequence[str] = (), with_confidence: bool = False
    ) -> Piece:
        """The decode loop: tokens from ``text``, one forward pass per token."""
        tokenizer = self._model.tokenizer
        logits = self._move_to(self.token_ids(text))
        if with_confidence:
            confidence = _confidence(logits)
            return replace(self._decode(text, max_tokens, one_word=one_word, stop=stop), confidence=confidence)
        produced: list[int] = []
        decoded = ""
        while len(produced) < max_tokens + _MAX_TOKENS_TO_COMPLETE_CHARACTER:
            over_budget = len(produced) >= max_tokens
            if over_budget and not decoded.endswith("\ufffd"):
                break
            token = self._pick(logits, text + decoded)
            if token in self._model.eos_ids:
                return Piece(decoded, len(produced), eos=True)
            if one_word and produced and self._model.whitespace_start[token]:
                break
            produced.append(token)
            logits = self._feed([token])
            decoded = tokenizer.decode(produced)
            if stop and any(marker in decoded for marker in stop):
                cut = min(decoded.index(marker) for marker in stop if marker in decoded)
                kept = next(count for count in range(len(produced) + 1) if len(tokenizer.decode(produced[:count])) >= cut)
                return Piece(decoded[:cut], kept, generated=len(produced), stopped=True)
        return Piece(decoded, len(produced))

    def _pick(self, logits: torch.Tensor, text: str) -> int:
        """The most likely token, or the one the draw for ``text`` lands on at the sampling temperature."""
        if self.sampling.greedy:
            return int(logits.argmax())
        probabilities = torch.softmax(logits.double() / self.sampling.temperature, dim=-1)
        draw = self.sampling.uniform(self._model.name, text)
        token = int(torch.searchsorted(torch.cumsum(probabilities, dim=-1), torch.tensor([draw], dtype=torch.float64)))
        return min(token, len(probabilities) - 1)

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        return self._decode(text, max_tokens, one_word=True, with_confidence=with_confidence)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        return self._decode(text, max_tokens, one_word=False, stop=stop)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        logprobs = torch.log_softmax(self._move_to(self.token_ids(text)), dim=-1)
        first_tokens = [self._model.tokenizer.encode(label, add_special_tokens=False)[0] for label in labels]
        return [float(logprobs[token]) for token in first_tokens]

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        """Feed ``text + continuation`` once and add up the log-probabilities of the continuation's tokens.

        The continuation's tokens are those past the longest token prefix that ``text + continuation``
        shares with ``text`` alone, so a token that spans the boundary is scored as the continuation's.
        """
        target = self.token_ids(text + continuation)
        start = _common_prefix_length(self.token_ids(text), target)
        scored = target[start:]
        if not scored:
            return ContinuationScore(0.0, 0)
        if start == 0:
            raise ContextTooLongError(f"{self._model.name}: a continuation needs some text before it to be scored")
        rows = self._move_to(target, logits_to_keep=len(scored) + 1)
        if rows.dim() == 1:
            rows = rows.unsqueeze(0)
        logprobs = torch.log_softmax(rows[-len(scored) - 1 : -1], dim=-1)
        picked = logprobs[torch.arange(len(scored)), torch.tensor(scored)]
        return ContinuationScore(float(picked.sum()), len(scored))

    def hidden_state(self, text: str) -> list[float]:
        self._move_to(self.token_ids(text), need_hidden=True)
        assert self._hidden is not None
        return self._hidden.tolist()

    def close(self) -> None:
        self._cache = self._new_cache()
        self.cached_ids = []
        self._logits = None
