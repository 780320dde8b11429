"""Who decides at a divergence: self-consultation (default: asked in both orders), the baselines, or a user's function."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.verifiers.base import (
    AlwaysMentor,
    CallableVerifier,
    NeverMentor,
    Verdict,
    Verifier,
    VerifyRequest,
)
from mentorcollab_langchain.verifiers.mentor_margin import MentorMarginVerifier
from mentorcollab_langchain.verifiers.self_consult import SelfConsultVerifier

DEFAULT_VERIFIER = "mentor-margin"
"""The verifier used when none is named. A 135M generator cannot judge its own divergences (asked in
the paper's order it picked "(A)" whatever it stood for; in both orders it is close to a coin), while the
mentor's log-probabilities of the two segments separate its right answers from its wrong ones on the
tuning data. Evidence in docs/results/README.md."""

PAPER_VERIFIER = "self-consult"
"""The paper's verifier, used by the faithful settings."""

NAMED_VERIFIERS: dict[str, Callable[[], Verifier]] = {
    "self-consult": SelfConsultVerifier,
    "self-consult-both-orders": partial(SelfConsultVerifier, both_orders=True),
    MentorMarginVerifier.name: MentorMarginVerifier,
    AlwaysMentor.name: AlwaysMentor,
    NeverMentor.name: NeverMentor,
}


def get_verifier(verifier: str | Verifier | None = None) -> Verifier:
    """A verifier from its name (see ``NAMED_VERIFIERS``) or as given."""
    if verifier is None:
        verifier = DEFAULT_VERIFIER
    if isinstance(verifier, str):
        if verifier not in NAMED_VERIFIERS:
            raise ConfigError(f"unknown verifier {verifier!r}; choose one of {', '.join(NAMED_VERIFIERS)}")
        return NAMED_VERIFIERS[verifier]()
    if not isinstance(verifier, Verifier):
        raise ConfigError(f"a verifier needs a name and a decide(request) method, got {type(verifier).__name__}")
    return verifier


__all__ = [
    "AlwaysMentor",
    "CallableVerifier",
    "DEFAULT_VERIFIER",
    "MentorMarginVerifier",
    "PAPER_VERIFIER",
    "NAMED_VERIFIERS",
    "NeverMentor",
    "SelfConsultVerifier",
    "Verdict",
    "Verifier",
    "VerifyRequest",
    "get_verifier",
]
