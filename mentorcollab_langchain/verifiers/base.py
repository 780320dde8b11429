"""Who decides at a divergence, and the simple deciders: the baselines and a user's own function."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from mentorcollab_langchain.backends.base import Confidence, Cursor

Choice = Literal["generator", "mentor"]
"""Whose lookahead segment a verdict keeps."""


@dataclass(frozen=True)
class VerifyRequest:
    """A divergence as a verifier sees it.

    ``generator`` and ``mentor`` are the two cursors, for verifiers that consult a model (the generator
    judging itself, the mentor scoring both segments); asking either at any text is safe, because the
    engine positions cursors by text before every use. ``generator_confidence`` is the generator's
    certainty at the first token of its diverging word, where the probe policy read it.
    """

    text: str
    generator_segment: str
    mentor_segment: str
    generator: Cursor
    mentor: Cursor | None = None
    generator_confidence: Confidence | None = None


@dataclass(frozen=True)
class Verdict:
    """The choice, the verifier's score for adopting the mentor where it has one, and what the score
    was made from (named figures, e.g. both segments' log-probabilities under the mentor)."""

    choice: Choice
    score: float | None = None
    evidence: Mapping[str, float] = field(default_factory=dict)


@runtime_checkable
class Verifier(Protocol):
    name: str

    def decide(self, request: VerifyRequest) -> Verdict: ...


class AlwaysMentor:
    """Baseline: adopt the mentor's segment at every divergence."""

    name = "always-mentor"

    def decide(self, request: VerifyRequest) -> Verdict:
        return Verdict("mentor", 1.0)


class NeverMentor:
    """Baseline: keep the generator's segment at every divergence (probes still cost mentor tokens)."""

    name = "never-mentor"

    def decide(self, request: VerifyRequest) -> Verdict:
        return Verdict("generator", 0.0)


class CallableVerifier:
    """Wraps a function ``(text, generator_segment, mentor_segment) -> bool | float``.

    ``True`` or a score above ``threshold`` adopts the mentor; a float is kept as the score.
    """

    def __init__(
        self, function: Callable[[str, str, str], bool | float], name: str = "callable", threshold: float = 0.5
    ) -> None:
        self.function = function
        self.name = name
        self.threshold = threshold

    def decide(self, request: VerifyRequest) -> Verdict:
        answer = self.function(request.text, request.generator_segment, request.mentor_segment)
        if isinstance(answer, bool):
            return Verdict("mentor" if answer else "generator", float(answer))
        score = float(answer)
        return Verdict("mentor" if score > self.threshold else "generator", score)
