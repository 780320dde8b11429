"""The knobs of the method, validated once, so a bad value fails before any model loads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mentorcollab_langchain.backends.grammar import check_grammar
from mentorcollab_langchain.backends.sampling import Sampling
from mentorcollab_langchain.engine.policies import NAMED_POLICIES
from mentorcollab_langchain.errors import ConfigError, InvalidSchemaError

# The shortest answer budget for which the mentor reads the prompt ahead unless told (``read_ahead``). At the
# generator's 80 tokens a second on this CPU, 32 tokens take 0.4 s, against the mentor's 10 s or more to
# read a five-shot prompt: below it there is nothing to hide.
READ_AHEAD_MIN_TOKENS = 32


class CollabConfig(BaseModel):
    """Settings of one collaboration run (see DESIGN.md, "The method, exactly").

    These fields are the one source of every setting: the chat model's fields, its per-call options and
    the CLI flags are all derived from them (with each field's description as their documentation).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe_policy: str = Field(
        default="uncertain",
        description="where the mentor is probed: random (the paper: each word with probability probe_rate) "
        "or uncertain (where the generator is unsure of its word, and at random words as well)",
    )
    probe_rate: float = Field(
        default=0.02, ge=0.0, le=1.0,
        description="probability that a word is probed at random (with the uncertain policy, a floor that "
        "still samples confident mistakes)",
    )
    uncertainty_signal: Literal["top_share", "top_probability", "entropy"] = Field(
        default="top_share",
        description="the uncertain policy's measure of the generator's doubt at a word's first token: top_share "
        "(top probability renormalised over the top two tokens), top_probability or entropy",
    )
    uncertainty_threshold: float = Field(
        default=0.55, ge=0.0,
        description="the uncertain policy probes below this top_share or top_probability, or above this entropy "
        "(nats)",
    )
    segment_tokens: int = Field(
        default=16, ge=1, description="length of each model's lookahead segment at a divergence"
    )
    max_word_tokens: int = Field(
        default=12, ge=4,
        description="the most tokens one word step may take (at least 4, so that any character split across "
        "byte tokens fits in one word)",
    )
    max_new_tokens: int = Field(
        default=512, ge=1, description="the most tokens committed to the answer (both models together)"
    )
    seed: int = Field(
        default=0, ge=0,
        description="seeds the probe positions and any sampling: the same seed gives the same probes and text",
    )
    temperature: float = Field(
        default=0.0, ge=0.0, le=10.0,
        description="0 decodes greedily (the paper); above 0 both models sample at this temperature, with "
        "draws fixed by the seed and the text",
    )
    match: Literal["exact", "normalized"] = Field(
        default="exact",
        description="how the two proposed words are compared: exact, or normalized (whitespace collapsed and "
        "stripped)",
    )
    stop: tuple[str, ...] = Field(default=(), description="strings that end the answer, cut before the first one")
    repetition_guard: bool = Field(
        default=True, description="stop when the same step is committed three times in a row"
    )
    prompt_style: Literal["chat", "raw"] = Field(
        default="chat",
        description="chat renders messages with each model's chat template; raw passes a ready completion "
        "prompt through (the paper)",
    )
    on_mentor_error: Literal["fallback", "raise"] = Field(
        default="fallback",
        description="fallback records a failed mentor call and goes on with the generator alone; raise stops "
        "the run with the error",
    )
    max_mentor_calls: int | None = Field(
        default=None, ge=0, description="per-request budget of mentor calls; once spent, no more probes"
    )
    max_mentor_tokens: int | None = Field(
        default=None, ge=0, description="per-request budget of tokens the mentor generates; once spent, no more probes"
    )
    max_mentor_tokens_read: int | None = Field(
        default=None,
        ge=0,
        description="per-request budget of tokens the mentor reads (the prompt, the generator's text it catches "
        "up on, the segments it scores): on a long prompt most of its cost, and what a served mentor bills as "
        "input; a probe is made only if the reading it needs fits what is left (a verifier that then reads the "
        "generator's segment under the mentor, mentor-margin, may pass it by that segment), and the mentor "
        "reads no prompt ahead that it could not afford",
    )
    probe_first_word: bool = Field(
        default=False,
        description="probe the answer's first word whatever the policy draws: where an agent decides between a "
        "tool call and prose (the chat model sets it when tools are offered and the choice is left to the model)",
    )
    read_ahead: bool | None = Field(
        default=None,
        description="the mentor reads the prompt on a background thread as soon as a request starts, while the "
        "generator writes, so the first probe does not wait for the whole prompt (the answer is the same either "
        f"way); unset: only when max_new_tokens is {READ_AHEAD_MIN_TOKENS} or more, since a shorter answer (a "
        "letter, a label, a yes or no) is written before reading ahead could hide anything, and reading for it "
        "spends the mentor's compute on prompts no probe may ask about",
    )
    grammar: str | None = Field(
        default=None,
        description="an llguidance grammar (Lark syntax; a JSON schema inside as %json {...}) that the whole answer "
        "must match: both models decode under it, and a mentor's words outside it are never adopted; the generator "
        "must run in process (llama.cpp or transformers)",
    )

    @field_validator("probe_policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        if name not in NAMED_POLICIES:
            raise ValueError(f"unknown probe policy; choose one of {', '.join(NAMED_POLICIES)}")
        return name

    @field_validator("grammar")
    @classmethod
    def _compiles(cls, grammar: str | None) -> str | None:
        if grammar is None:
            return None
        try:
            return check_grammar(grammar)
        except InvalidSchemaError as error:
            raise ValueError(str(error)) from None

    def __init__(self, **fields: Any) -> None:
        """Validate ``fields``, raising ``ConfigError`` that names each bad field and its value."""
        try:
            super().__init__(**fields)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']} (got {item.get('input')!r})"
                for item in error.errors()
            )
            raise ConfigError(f"invalid collaboration config: {problems}") from None

    @classmethod
    def faithful(cls, **overrides: Any) -> CollabConfig:
        """The paper's official settings: probe rate 0.04 per word, 16-token segments, raw completion
        prompts, exact match, no repetition guard; pair it with the paper's verifier, ``PAPER_VERIFIER``."""
        settings: dict[str, Any] = {
            "probe_policy": "random",
            "probe_rate": 0.04,
            "segment_tokens": 16,
            "match": "exact",
            "prompt_style": "raw",
            "repetition_guard": False,
        }
        return cls(**(settings | overrides))

    @property
    def reads_ahead(self) -> bool:
        """``read_ahead`` as it applies to this run: as set, or when unset by the answer's budget."""
        return self.read_ahead if self.read_ahead is not None else self.max_new_tokens >= READ_AHEAD_MIN_TOKENS

    @property
    def sampling(self) -> Sampling:
        """How both models pick tokens in this run."""
        return Sampling(temperature=self.temperature, seed=self.seed)

    def words_match(self, generator_word: str, mentor_word: str) -> bool:
        if self.match == "exact":
            return generator_word == mentor_word
        return " ".join(generator_word.split()) == " ".join(mentor_word.split())
