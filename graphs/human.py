"""The human verifier: a person decides each divergence, seeing what the automatic verifier would do.

With ``build_mentorcollab_graph(..., human_verifier=True)`` the ``lookahead`` node asks the automatic
verifier for its verdict (``machine_verdict``) and the ``verify`` node interrupts with both segments
and that verdict (``decide``). The person resumes with ``Command(resume="generator" | "mentor")`` (or
``{"choice": ..., "score": ...}``). Scoring before the interrupt means a resume recomputes nothing: a
node that interrupts runs again from its start when resumed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from langgraph.types import interrupt
from pydantic import BaseModel, Field, ValidationError, model_validator

from graphs.events import evidence_attributes
from mentorcollab_langchain.engine.events import Event
from mentorcollab_langchain.engine.state import CollabState
from mentorcollab_langchain.engine.steps import commit_verdict, score_divergence
from mentorcollab_langchain.engine.team import Team
from mentorcollab_langchain.errors import MentorCollabError
from mentorcollab_langchain.verifiers import Verdict

HUMAN = "human"
CHOICES = ("generator", "mentor")

_RESUME_HINT = (
    "resume the human verifier with Command(resume='generator') to keep the generator's segment or "
    "Command(resume='mentor') to adopt the mentor's (or {'choice': ..., 'score': optional number})"
)


class InvalidResumeError(MentorCollabError, ValueError):
    """The value given to resume the human verifier's interrupt is not a choice."""


def parse_choice(value: Any) -> tuple[Literal["generator", "mentor"], float | None]:
    """A person's answer to the verify interrupt: ``"generator"`` or ``"mentor"`` (or ``{"choice": ...}``
    with an optional ``"score"``). Anything else is an ``InvalidResumeError`` that says what to send."""
    score = None
    choice = value
    if isinstance(value, HumanChoice):
        return value.choice, value.score
    if isinstance(value, dict):
        choice = value.get("choice")
        score = value.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise InvalidResumeError(
                f"the score in a verify resume value must be a number, got {score!r}; {_RESUME_HINT}"
            )
    if not isinstance(choice, str) or choice.strip().lower() not in CHOICES:
        raise InvalidResumeError(f"{_RESUME_HINT}; got {value!r}")
    return choice.strip().lower(), (None if score is None else float(score))  # type: ignore[return-value]


class HumanChoice(BaseModel):
    """The answer the verify interrupt expects (its ``response_schema``): which segment to commit."""

    choice: Literal["generator", "mentor"]
    score: float | None = Field(default=None, description="the person's own probability of adopting the mentor")

    @model_validator(mode="before")
    @classmethod
    def _from_resume_value(cls, value: Any) -> Any:
        choice, score = parse_choice(value)  # a ValueError here leaves the interrupt unanswered
        return {"choice": choice, "score": score}


def machine_verdict(state: CollabState, team: Team) -> dict[str, Any]:
    """The automatic verifier's verdict on the pending divergence, kept in the graph state for the person."""
    verdict = score_divergence(state, team)
    return {"choice": verdict.choice, "score": verdict.score, "verifier": team.verifier.name,
            "evidence": dict(verdict.evidence)}


def verdict_attributes(verdict: dict[str, Any]) -> dict[str, Any]:
    """The machine verdict as span attributes of the node that computed it."""
    attributes = {"mentorcollab.verifier": verdict["verifier"], "mentorcollab.verifier_choice": verdict["choice"]}
    if verdict["score"] is not None:
        attributes["mentorcollab.verifier_score"] = verdict["score"]
    return attributes | evidence_attributes(verdict["evidence"])


def decide(state: CollabState, team: Team, verdict: dict[str, Any] | None) -> Iterator[Event]:
    """The verify step with a person as the verifier: interrupt, then commit the person's choice.

    ``verdict`` is the automatic verifier's (``machine_verdict``), shown to the person; the decision
    keeps its score unless the person gives one.
    """
    divergence = state.divergence
    assert divergence is not None and divergence.mentor_segment is not None
    verdict = verdict or {}
    payload = {
        "type": "mentorcollab.verify",
        "question": "Keep the generator's segment or adopt the mentor's?",
        "text": state.text,
        "position": divergence.position,
        "generator_word": divergence.generator_word.text,
        "mentor_word": divergence.mentor_word.text,
        "generator_segment": (divergence.generator_segment or divergence.generator_word).text,
        "mentor_segment": divergence.mentor_segment.text,
        "verifier": verdict.get("verifier", team.verifier.name),
        "verifier_score": verdict.get("score"),
        "verifier_choice": verdict.get("choice"),
        "verifier_evidence": verdict.get("evidence", {}),
        "choices": list(CHOICES),
    }
    try:
        # Validated inside interrupt(): a bad value is not saved, so the person can answer again.
        answer = interrupt(payload, response_schema=HumanChoice)
    except ValidationError as error:
        problem = error.errors()[0].get("ctx", {}).get("error")
        raise (problem if isinstance(problem, InvalidResumeError) else InvalidResumeError(str(error))) from None
    score = verdict.get("score") if answer.score is None else answer.score
    yield from commit_verdict(state, team, Verdict(answer.choice, score, verdict.get("evidence", {})), verifier=HUMAN)
