"""The knobs of the method, validated once, so a bad value fails before any model loads."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mentorcollab_langchain.backends.sampling import Sampling
from mentorcollab_langchain.errors import ConfigError


class CollabConfig(BaseModel):
    """Settings of one collaboration run (see DESIGN.md, "The method, exactly").

    Attributes:
        probe_policy: where the mentor is probed: ``random`` (the paper: each word with probability
            ``probe_rate``) or ``uncertain`` (where the generator is unsure of its word, and at random
            words as well; see ``engine.policies``).
        probe_rate: probability that a word step is probed at random, whatever it says (with the
            ``uncertain`` policy, a floor that still samples confident mistakes).
        uncertainty_signal: the ``uncertain`` policy's measure of the generator's doubt at a word's
            first token: ``top_share`` (top probability renormalised over the top two tokens),
            ``top_probability`` or ``entropy``.
        uncertainty_threshold: the ``uncertain`` policy probes below this ``top_share`` or
            ``top_probability``, or above this ``entropy`` (nats).
        segment_tokens: length of each model's lookahead segment at a divergence.
        max_word_tokens: the most tokens one word step may take.
        max_new_tokens: the most tokens committed to the answer (both sources together).
        seed: seeds the probe positions and any sampling; the same seed gives the same probes and text.
        temperature: 0 decodes greedily (the paper's setting); above 0 both models sample each token
            at this temperature, with draws fixed by the seed and the text (``backends.sampling``).
        match: how the two proposed words are compared: ``exact``, or ``normalized`` (whitespace
            collapsed and stripped).
        stop: strings that end the answer; the answer is cut before the first one.
        repetition_guard: stop when the same step is committed three times in a row.
        prompt_style: ``chat`` renders messages with each model's chat template; ``raw`` passes a ready
            completion prompt through (the paper's setting).
        on_mentor_error: ``fallback`` records a failed mentor call and goes on with the generator alone;
            ``raise`` stops the run with the error.
        max_mentor_calls: per-request budget of mentor calls; once spent, no more probes.
        max_mentor_tokens: per-request budget of tokens the mentor generates; once spent, no more probes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    probe_policy: str = "uncertain"
    probe_rate: float = Field(default=0.02, ge=0.0, le=1.0)
    uncertainty_signal: Literal["top_share", "top_probability", "entropy"] = "top_share"
    uncertainty_threshold: float = Field(default=0.55, ge=0.0)
    segment_tokens: int = Field(default=16, ge=1)
    max_word_tokens: int = Field(default=12, ge=1)
    max_new_tokens: int = Field(default=512, ge=1)
    seed: int = Field(default=0, ge=0)
    temperature: float = Field(default=0.0, ge=0.0, le=10.0)
    match: Literal["exact", "normalized"] = "exact"
    stop: tuple[str, ...] = ()
    repetition_guard: bool = True
    prompt_style: Literal["chat", "raw"] = "chat"
    on_mentor_error: Literal["fallback", "raise"] = "fallback"
    max_mentor_calls: int | None = Field(default=None, ge=0)
    max_mentor_tokens: int | None = Field(default=None, ge=0)

    @field_validator("probe_policy")
    @classmethod
    def _known_policy(cls, name: str) -> str:
        from mentorcollab_langchain.engine.policies import NAMED_POLICIES

        if name not in NAMED_POLICIES:
            raise ValueError(f"unknown probe policy; choose one of {', '.join(NAMED_POLICIES)}")
        return name

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
    def sampling(self) -> Sampling:
        """How both models pick tokens in this run."""
        return Sampling(temperature=self.temperature, seed=self.seed)

    def words_match(self, generator_word: str, mentor_word: str) -> bool:
        if self.match == "exact":
            return generator_word == mentor_word
        return " ".join(generator_word.split()) == " ".join(mentor_word.split())
