"""Where to probe: the probe policies, chosen by name in ``CollabConfig.probe_policy``.

A policy answers two questions. Before a stretch of words, how many may the generator write with no
probe at all (``words_until_probe``)? That lets the generator run a whole gap without leaving its loop,
and it is all the paper's ``random`` policy needs. And, for each unprobed word the generator writes,
should the mentor be asked about this very word (``probe_word``)? A content-aware policy answers from
the generator's own confidence at the word's first token, read from logits the generator computed
anyway, so a probe never recomputes the generator's word: the engine holds the word back as the
state's ``pending_word`` and the probe step takes it from there.

Policies keep no state of their own: the gap counter and the pending word live in ``CollabState``, so a
checkpointed run resumes exactly. A policy is anything with ``name``, ``needs_confidence``,
``words_until_probe`` and ``probe_word``; pass your own object to ``collaborate(probe_policy=...)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from mentorcollab_langchain.backends.base import Piece
from mentorcollab_langchain.errors import ConfigError

if TYPE_CHECKING:  # the settings a policy reads; config.py imports this module to validate policy names
    from mentorcollab_langchain.engine.config import CollabConfig

# The gap when no random probe is scheduled: the rate is 0, or the mentor is out of the run (failed or
# over budget, when the engine also stops asking probe_word).
NO_MORE_PROBES = sys.maxsize


@runtime_checkable
class ProbePolicy(Protocol):
    name: str
    needs_confidence: bool

    def words_until_probe(self, config: CollabConfig, gap_index: int) -> int:
        """How many words the generator writes before the next scheduled probe (the ``gap_index``-th gap)."""
        ...

    def probe_word(self, word: Piece, config: CollabConfig) -> bool:
        """Whether to probe the mentor at this word, which the generator has just proposed."""
        ...


def geometric_gap(rate: float, seed: int, gap_index: int) -> int:
    """Unprobed words before the next probe when each word is probed with probability ``rate``.

    The k-th gap comes from its own generator seeded by ``(seed, k)``: deterministic, independent of
    threads and other requests, and nothing but the counter needs to be checkpointed.
    """
    if rate <= 0.0:
        return NO_MORE_PROBES
    if rate >= 1.0:
        return 0
    return int(np.random.default_rng([seed, gap_index]).geometric(rate)) - 1


class RandomPolicy:
    """The paper's policy: each word is probed with probability ``probe_rate``, whatever it says."""

    name = "random"
    needs_confidence = False

    def words_until_probe(self, config: CollabConfig, gap_index: int) -> int:
        return geometric_gap(config.probe_rate, config.seed, gap_index)

    def probe_word(self, word: Piece, config: CollabConfig) -> bool:
        return False


class UncertainPolicy(RandomPolicy):
    """Probe where the generator is unsure of its word's first token, and at random words as well.

    ``uncertainty_signal`` picks the measure: ``top_share`` (the top token's probability renormalised
    over the two most likely tokens), ``top_probability`` (over the whole vocabulary), both probed
    below ``uncertainty_threshold``; or ``entropy`` (nats), probed above it. Each word is also probed at
    random with probability ``probe_rate``, as the paper does, so confident mistakes are still sampled.
    """

    name = "uncertain"
    needs_confidence = True

    def probe_word(self, word: Piece, config: CollabConfig) -> bool:
        value = uncertainty(word, config.uncertainty_signal)
        return value is not None and unsure(value, config.uncertainty_signal, config.uncertainty_threshold)


# The signals whose larger values mean a less sure generator; the others are probabilities, probed below.
SIGNALS_PROBED_ABOVE = frozenset({"entropy"})


def uncertainty(word: Piece, signal: str) -> float | None:
    """``word``'s value of an uncertainty signal, or None for a word no policy probes (blank, or without a
    confidence). The uncertain policy and the threshold calibration (``evals.calibration``) read the same one."""
    confidence = word.confidence
    if confidence is None or not word.text.strip():
        return None
    if signal == "entropy":
        return confidence.entropy
    return confidence.top_share if signal == "top_share" else confidence.top_probability


def unsure(value: float, signal: str, threshold: float) -> bool:
    """Whether a word whose ``signal`` reads ``value`` is probed at ``threshold``."""
    return value > threshold if signal in SIGNALS_PROBED_ABOVE else value < threshold


NAMED_POLICIES: dict[str, Callable[[], ProbePolicy]] = {
    RandomPolicy.name: RandomPolicy,
    UncertainPolicy.name: UncertainPolicy,
}


def get_probe_policy(policy: str | ProbePolicy) -> ProbePolicy:
    """A probe policy from its name (see ``NAMED_POLICIES``) or as given."""
    if isinstance(policy, str):
        if policy not in NAMED_POLICIES:
            raise ConfigError(f"unknown probe policy {policy!r}; choose one of {', '.join(NAMED_POLICIES)}")
        return NAMED_POLICIES[policy]()
    if not isinstance(policy, ProbePolicy):
        raise ConfigError(
            "a probe policy needs name, needs_confidence, words_until_probe(config, gap_index) and "
            f"probe_word(word, config), got {type(policy).__name__}"
        )
    return policy
