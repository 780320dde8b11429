"""Mentor margin: the mentor scores both segments, and the generator adopts when the mentor clearly
prefers its own.

A 135M generator cannot tell which of two continuations is better (docs/results), but the mentor can:
it is the stronger model, and reading a short segment costs it one prefill of the segment's tokens,
far less than writing it. Its own segment costs an in-process mentor nothing more: it wrote it, and its
cursor kept each token's logprob (``LocalCursor.score_continuation``). Both segments start at the same
text, so their log-probabilities under the mentor compare directly; the margin is taken per token,
because the two segments may hold different numbers of the mentor's tokens. Where the generator's
segment is nearly as likely as the mentor's own (another spelling, a synonym), the generator keeps it
and the answer stays the generator's.
"""

from __future__ import annotations

import math

from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.verifiers.base import Verdict, VerifyRequest


class MentorMarginVerifier:
    """Adopt the mentor's segment when its mean log-probability per token under the mentor exceeds the
    generator's segment's by more than ``margin`` nats."""

    name = "mentor-margin"

    def __init__(self, margin: float = 0.5) -> None:
        self.margin = margin

    def decide(self, request: VerifyRequest) -> Verdict:
        if request.mentor is None:
            raise ConfigError("the mentor-margin verifier needs the mentor's cursor in the verify request")
        # Its own segment first: the cursor still holds it from the lookahead, with its logprobs.
        mentor_own = request.mentor.score_continuation(request.text, request.mentor_segment)
        generator_own = request.mentor.score_continuation(request.text, request.generator_segment)
        difference = mentor_own.mean_logprob - generator_own.mean_logprob
        score = 1.0 / (1.0 + math.exp(-(difference - self.margin)))
        evidence = {
            "mentor_segment_logprob": mentor_own.logprob,
            "mentor_segment_tokens": float(mentor_own.tokens),
            "generator_segment_logprob": generator_own.logprob,
            "generator_segment_tokens": float(generator_own.tokens),
            "mean_logprob_margin": difference,
            "threshold": self.margin,
        }
        return Verdict("mentor" if difference > self.margin else "generator", score, evidence)
