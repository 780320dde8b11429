"""Who decides at a divergence, and the simple deciders: the baselines and a user's own function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from mentorcollab_langchain.backends.base import Cursor

Source = Literal["generator", "mentor"]
"""Which model wrote a piece of the answer, and so which one a verdict chooses."""


@dataclass(frozen=True)
class VerifyRequest:
    """A divergence as a verifier sees it.

    ``generator`` is the generator's cursor, for verifiers that consult the generator itself; asking it
    at any text is safe, because the engine positions cursors by text before every use.
    """

    text: str
    generator_segment: str
    mentor_segment: str
    generator: Cursor


@dataclass(frozen=True)
class Verdict:
    """The choice, and the verifier's probability of adopting the mentor where it has one."""

    choice: Source
    score: float | None = None


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
