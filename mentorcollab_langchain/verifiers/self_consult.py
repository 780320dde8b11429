"""Self-consultation: the generator itself is asked which of the two continuations it prefers.

This is the paper's default verifier. It costs one forward pass over a short question appended to the
generator's own context, and reads the probabilities of the option labels ``A`` (its own segment) and
``B`` (the mentor's) rather than a free-text reply, so it always yields a decision and a score.
"""

from __future__ import annotations

import math

from mentorcollab_langchain.verifiers.base import Verdict, VerifyRequest

SELF_CONSULT_QUESTION = (
    "\nNow I will choose the next sequence that could lead to the correct answer. "
    "Option (A): {generator}, Option (B): {mentor}. My choice: Option ("
)


class SelfConsultVerifier:
    name = "self-consult"

    def decide(self, request: VerifyRequest) -> Verdict:
        question = SELF_CONSULT_QUESTION.format(generator=request.generator_segment, mentor=request.mentor_segment)
        logprob_a, logprob_b = request.generator.label_logprobs(request.text + question, ["A", "B"])
        # P(B) among the two labels: a softmax over just these two log-probabilities.
        score = 1.0 / (1.0 + math.exp(logprob_a - logprob_b))
        return Verdict("mentor" if logprob_b > logprob_a else "generator", score)
