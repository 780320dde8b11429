"""The per-request state of a collaboration: plain, serializable data.

Everything a run needs to continue lives here (the answer so far, where it came from, the counters, the
position in the probe schedule, a divergence waiting for its verdict), so a LangGraph checkpointer can
store it and a run can resume in another process. Models and KV caches are never part of it: backends
rebuild them from ``text``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from mentorcollab_langchain.backends.base import Piece
from mentorcollab_langchain.verifiers.base import Choice

FinishReason = Literal["eos", "length", "stop", "repetition", "error"]

Source = Literal["generator", "mentor"]
"""Which model wrote a piece of the answer (a span's provenance)."""


class Span(BaseModel):
    """Characters ``[start, end)`` of the answer and the model that wrote them."""

    start: int
    end: int
    source: Source


class Decision(BaseModel):
    """One verdict at a divergence: both candidates, the verifier's score, and the choice made."""

    position: int = Field(description="character offset in the answer where the chosen segment starts")
    word_index: int = Field(description="how many word steps came before this probe")
    generator_word: str
    mentor_word: str
    generator_segment: str
    mentor_segment: str
    score: float | None = Field(default=None, description="the verifier's probability of adopting the mentor")
    evidence: dict[str, float] = Field(default_factory=dict, description="what the verifier's score was made from")
    choice: Choice
    verifier: str


class Divergence(BaseModel):
    """A probe whose two words differed, waiting for lookahead and verdict."""

    position: int
    word_index: int
    generator_word: Piece
    mentor_word: Piece
    generator_segment: Piece | None = None
    mentor_segment: Piece | None = None


class Stats(BaseModel):
    """The accounting of one request (DESIGN.md, method step 8)."""

    words: int = 0
    probes: int = 0
    divergences: int = 0
    adoptions: int = 0
    generator_tokens_generated: int = 0
    mentor_tokens_generated: int = 0
    generator_tokens_read: int = 0
    mentor_tokens_read: int = 0
    # prompt tokens found in a model's cache from an earlier request (the prefix cache), not read again
    generator_tokens_cached: int = 0
    mentor_tokens_cached: int = 0
    generator_tokens_committed: int = 0
    mentor_tokens_committed: int = 0
    generator_calls: int = 0
    mentor_calls: int = 0
    verifier_calls: int = 0
    mentor_errors: int = 0
    seconds: dict[str, float] = Field(default_factory=dict, description="wall time per phase")

    @property
    def tokens_committed(self) -> int:
        return self.generator_tokens_committed + self.mentor_tokens_committed

    @property
    def mentor_share(self) -> float:
        """Share of the committed tokens that came from the mentor."""
        return self.mentor_tokens_committed / self.tokens_committed if self.tokens_committed else 0.0

    @property
    def mentor_tokens_processed(self) -> int:
        """Every token the mentor computed: read (prompt, catch-ups, scoring) and generated."""
        return self.mentor_tokens_read + self.mentor_tokens_generated

    @property
    def wall_seconds(self) -> float:
        return sum(self.seconds.values())


class CollabState(BaseModel):
    """Everything about one request's collaboration that must survive a checkpoint."""

    text: str = ""
    spans: list[Span] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    stats: Stats = Field(default_factory=Stats)
    words_until_probe: int = 0
    gaps_drawn: int = 0
    pending_word: Piece | None = Field(
        default=None, description="the generator's word that the probe policy chose to probe, not yet committed"
    )
    divergence: Divergence | None = None
    recent_steps: list[str] = Field(default_factory=list, description="the last committed steps, for the guard")
    emitted: int = Field(default=0, description="how many characters of text have been streamed")
    probing_stopped: str | None = Field(default=None, description="why the mentor is no longer probed, if it is not")
    errors: list[str] = Field(default_factory=list)
    prepared: bool = False
    finish_reason: FinishReason | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def mentor_spans(self) -> list[Span]:
        return [span for span in self.spans if span.source == "mentor"]

    def record(self) -> dict:
        """The whole record as JSON-ready data: text, spans, decisions, stats and derived figures."""
        data = self.model_dump(
            exclude={"recent_steps", "emitted", "divergence", "prepared", "words_until_probe", "pending_word"}
        )
        data["stats"] |= {
            "tokens_committed": self.stats.tokens_committed,
            "mentor_share": self.stats.mentor_share,
            "wall_seconds": self.stats.wall_seconds,
            "mentor_tokens_processed": self.stats.mentor_tokens_processed,
        }
        return data
