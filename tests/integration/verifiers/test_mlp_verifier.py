"""The shipped ``mlp`` verifier on the real default generator it was trained for."""

from __future__ import annotations

import pytest

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.models import DEFAULT_GENERATOR
from mentorcollab_langchain.verifiers import VerifyRequest, get_verifier

CONTEXT = "Question: Which gas do plants take in?\n A. oxygen\n B. carbon dioxide\nAnswer:"


@pytest.mark.slow
def test_the_shipped_verifier_decides_with_the_real_generator() -> None:
    generator = TransformersBackend(DEFAULT_GENERATOR, device="cpu")
    verdict = get_verifier("mlp", generator=generator).decide(
        VerifyRequest(CONTEXT, " A", " B", generator.open(CONTEXT, "raw"))
    )
    assert verdict.choice in ("mentor", "generator") and 0.0 <= verdict.score <= 1.0
