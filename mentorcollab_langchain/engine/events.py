"""What a run reports while it goes: text as it is committed, probes, decisions, failures, the end.

Consumers (the CLI, the chat model's stream, the graph's custom stream) turn these into their own
output; none of them needs to look inside the engine's state to follow a run.
"""

from __future__ import annotations

from dataclasses import dataclass

from mentorcollab_langchain.engine.state import Decision, FinishReason, Source


@dataclass(frozen=True)
class TextCommitted:
    """Answer text ``[start, end)`` from one source, released once no stop string can still cut it."""

    text: str
    source: Source
    start: int
    end: int


@dataclass(frozen=True)
class Probed:
    """The mentor was asked for its next word at a probe position."""

    word_index: int
    position: int
    generator_word: str
    mentor_word: str
    diverged: bool


@dataclass(frozen=True)
class Decided:
    """The verifier (or a person) chose between the two lookahead segments."""

    decision: Decision


@dataclass(frozen=True)
class MentorFailed:
    """A mentor call failed; with ``on_mentor_error="fallback"`` the generator goes on alone."""

    error: str


@dataclass(frozen=True)
class Finished:
    reason: FinishReason


Event = TextCommitted | Probed | Decided | MentorFailed | Finished
