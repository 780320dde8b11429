"""How a cursor picks each token: the most likely one, or a draw at a temperature.

A draw's randomness comes from ``(seed, model, what the token follows)``, never from a running random
generator. What the token follows is the prompt and the response text so far, so two requests with the
same seed but different prompts draw independently from their first token on. So the same request
writes the same text whether a cursor's cache was kept or rebuilt after a resume, whether a word was
decoded alone or inside a lookahead, and whatever other requests run in other threads; and nothing but
the seed needs to be checkpointed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def key(self, model: str, context: str) -> int:
        """A 63-bit number fixed by the seed, the model and the ``context`` the token follows (the prompt,
        or an identity of it, and the response text)."""
        digest = hashlib.blake2b(f"{self.seed}\0{model}\0{context}".encode(errors="surrogatepass"), digest_size=8)
        return int.from_bytes(digest.digest(), "little") >> 1

    def uniform(self, model: str, context: str) -> float:
        """The draw in [0, 1) for the token after ``context``: inverse-CDF sampling picks the token it lands on."""
        return float(np.random.default_rng(self.key(model, context)).random())


GREEDY = Sampling()
