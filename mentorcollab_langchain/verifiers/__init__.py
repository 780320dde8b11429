"""Who decides at a divergence: the mentor's margin (default), self-consultation in one or both orders, the
trained ``mlp`` verifier, the baselines, or a user's function."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

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
from mentorcollab_langchain.verifiers.mlp import MLPVerifier, load_named
from mentorcollab_langchain.verifiers.self_consult import SelfConsultVerifier

if TYPE_CHECKING:
    from mentorcollab_langchain.backends.base import Backend

DEFAULT_VERIFIER = "mentor-margin"
"""The verifier used when none is named. A 135M generator cannot judge its own divergences (asked in
the paper's order it picked "(A)" whatever it stood for; in both orders it is close to a coin), while the
mentor's log-probabilities of the two segments separate its right answers from its wrong ones on the
tuning data. Evidence in docs/results/README.md."""

PAPER_VERIFIER = "self-consult"
"""The paper's verifier, used by the faithful settings."""

NAMED_VERIFIERS: dict[str, Callable[..., Verifier]] = {
    "self-consult": SelfConsultVerifier,
    "self-consult-both-orders": partial(SelfConsultVerifier, both_orders=True),
    MentorMarginVerifier.name: MentorMarginVerifier,
    "mlp": partial(load_named, "mlp"),
    AlwaysMentor.name: AlwaysMentor,
    NeverMentor.name: NeverMentor,
}
"""The verifiers known by name. ``mlp`` is the trained verifier shipped for the generator in use (its
factory takes the generator); ``mlp:PATH`` names one trained with ``mentorcollab train-verifier``."""

GENERATOR_BOUND = frozenset({"mlp"})
"""Named verifiers that belong to one generator and are built with it, so they can check it."""


def get_verifier(verifier: str | Verifier | None = None, generator: Backend | str | None = None) -> Verifier:
    """A verifier from its name (see ``NAMED_VERIFIERS``, or ``mlp:PATH``) or as given.

    ``generator`` is the generator backend (or model name) of the run: a trained verifier is loaded for
    it and refuses it (``VerifierMismatchError``) when it is not the generator it was trained on.
    """
    if verifier is None:
        verifier = DEFAULT_VERIFIER
    if isinstance(verifier, str):
        if verifier.startswith("mlp:"):
            return load_named(verifier, generator)
        if verifier not in NAMED_VERIFIERS:
            raise ConfigError(f"unknown verifier {verifier!r}; choose one of {', '.join(NAMED_VERIFIERS)} or mlp:PATH")
        if verifier in GENERATOR_BOUND:
            return NAMED_VERIFIERS[verifier](generator)
        return NAMED_VERIFIERS[verifier]()
    if not isinstance(verifier, Verifier):
        raise ConfigError(f"a verifier needs a name and a decide(request) method, got {type(verifier).__name__}")
    return verifier


__all__ = [
    "DEFAULT_VERIFIER",
    "NAMED_VERIFIERS",
    "PAPER_VERIFIER",
    "AlwaysMentor",
    "CallableVerifier",
    "MLPVerifier",
    "MentorMarginVerifier",
    "NeverMentor",
    "SelfConsultVerifier",
    "Verdict",
    "Verifier",
    "VerifyRequest",
    "get_verifier",
]
