"""How a cursor picks each token: the most likely one, or a draw at a temperature.

A draw's randomness comes from ``(seed, model, response text so far)``, never from a running random
generator. So the same request writes the same text whether a cursor's cache was kept or rebuilt after
a resume, whether a word was decoded alone or inside a lookahead, and whatever other requests run in
other threads; and nothing but the seed needs to be checkpointed.
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

    def key(self, model: str, text: str) -> int:
        """A 63-bit number fixed by the seed, the model and the response text the token follows."""
        digest = hashlib.blake2b(f"{self.seed}\0{model}\0{text}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1

    def uniform(self, model: str, text: str) -> float:
        """The draw in [0, 1) for the token after ``text``: inverse-CDF sampling picks the token it lands on."""
        return float(np.random.default_rng(self.key(model, text)).random())


GREEDY = Sampling()
