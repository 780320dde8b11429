"""Self-consultation: the generator itself is asked which of the two continuations it prefers.

This is the paper's default verifier. It costs one forward pass over a short question appended to the
generator's own context, and reads the probabilities of the option labels rather than a free-text reply,
so it always yields a decision and a score.

A small generator may prefer one label whatever it stands for. The 135M default picks "(A)" almost
every time (0 adoptions in 40 as option B, 39 as option A: ``git show 0028892:docs/results/verifier_order_check.txt``,
retired with its lost records), and the paper's order puts the generator's own
segment at (A), so it would almost never adopt the mentor. ``both_orders=True`` asks a second time with
the options swapped and averages the two probabilities of choosing the mentor, which cancels a fixed
label preference at the price of a second forward pass.
"""

from __future__ import annotations

import math

from mentorcollab_langchain.verifiers.base import Verdict, VerifyRequest

SELF_CONSULT_QUESTION = (
    "\nNow I will choose the next sequence that could lead to the correct answer. "
    "Option (A): {first}, Option (B): {second}. My choice: Option ("
)


class SelfConsultVerifier:
    def __init__(self, both_orders: bool = False) -> None:
        self.both_orders = both_orders
        self.name = "self-consult-both-orders" if both_orders else "self-consult"

    def decide(self, request: VerifyRequest) -> Verdict:
        score = _probability_of_second(request, first=request.generator_segment, second=request.mentor_segment)
        if self.both_orders:
            mentor_first = 1.0 - _probability_of_second(
                request, first=request.mentor_segment, second=request.generator_segment
            )
            score = (score + mentor_first) / 2.0
        return Verdict("mentor" if score > 0.5 else "generator", score)


def _probability_of_second(request: VerifyRequest, first: str, second: str) -> float:
    """P("B") against P("A") for the question with ``first`` as option (A): a softmax over the two labels."""
    question = SELF_CONSULT_QUESTION.format(first=first, second=second)
    logprob_a, logprob_b = request.generator.label_logprobs(request.text + question, ["A", "B"])
    return 1.0 / (1.0 + math.exp(logprob_a - logprob_b))
