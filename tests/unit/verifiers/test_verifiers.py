"""Self-consultation reads the generator's label probabilities; both orders cancel a label preference."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from mentorcollab_langchain.verifiers import NAMED_VERIFIERS, SelfConsultVerifier, VerifyRequest, get_verifier

GENERATOR_SEGMENT, MENTOR_SEGMENT = " 24 clips in", " half as many,"


class LabelBiasedJudge:
    """A judge that likes the mentor's segment by ``preference`` nats and label "A" by ``label_bias`` nats."""

    def __init__(self, label_bias: float, preference: float) -> None:
        self.label_bias = label_bias
        self.preference = preference
        self.questions: list[str] = []

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        self.questions.append(text)
        option_a = text.split("Option (A):")[1].split(", Option (B):")[0]
        logits = {"A": self.label_bias, "B": 0.0}
        logits["A" if option_a.strip() == MENTOR_SEGMENT.strip() else "B"] += self.preference
        normalizer = math.log(sum(math.exp(value) for value in logits.values()))
        return [logits[label] - normalizer for label in labels]


def decide(verifier: SelfConsultVerifier, judge: LabelBiasedJudge):
    return verifier.decide(VerifyRequest("She sold", GENERATOR_SEGMENT, MENTOR_SEGMENT, judge))  # type: ignore[arg-type]


def test_one_order_follows_the_label_preference_and_both_orders_cancel_it() -> None:
    judge = LabelBiasedJudge(label_bias=3.0, preference=2.0)
    one_order = decide(SelfConsultVerifier(), judge)
    assert one_order.choice == "generator" and one_order.score == pytest.approx(1 / (1 + math.exp(1.0)))
    both = decide(SelfConsultVerifier(both_orders=True), judge)
    assert both.choice == "mentor"
    assert both.score == pytest.approx((1 / (1 + math.exp(1.0)) + 1 - 1 / (1 + math.exp(5.0))) / 2)
    # The second question put the mentor's segment first.
    assert f"Option (A): {MENTOR_SEGMENT}, Option (B): {GENERATOR_SEGMENT}" in judge.questions[-1]


def test_without_a_label_preference_both_orders_agree_with_one() -> None:
    for preference in (-1.5, 1.5):
        judge = LabelBiasedJudge(label_bias=0.0, preference=preference)
        one_order = decide(SelfConsultVerifier(), judge).choice
        assert one_order == decide(SelfConsultVerifier(both_orders=True), judge).choice


def test_named_verifiers_build_what_their_names_say() -> None:
    assert get_verifier("self-consult-both-orders").name == "self-consult-both-orders"
    assert all(get_verifier(name).name == name for name in NAMED_VERIFIERS)
