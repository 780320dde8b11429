"""Loading models: once per process, and a slow first load never blocks a model that is loaded."""

from __future__ import annotations

import threading
import time

import pytest

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends import transformers as transformers_backend


@pytest.mark.slow  # several seconds: the fast set stays under two minutes
def test_a_slow_first_load_blocks_neither_loaded_models_nor_other_loads(
    tiny_byte_level_model: str, tiny_sentencepiece_model: str, monkeypatch
) -> None:
    loaded = TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")
    loaded.loaded  # noqa: B018 - load it now
    release = threading.Event()
    real_load = transformers_backend._load

    def stuck_load(name, *args):  # a first load that takes until it is released
        if name == "stuck/model":
            release.wait(30)
            return loaded.loaded
        return real_load(name, *args)

    monkeypatch.setattr(transformers_backend, "_load", stuck_load)
    stuck = threading.Thread(target=lambda: transformers_backend.load_model("stuck/model", "cpu", "float32"))
    stuck.start()
    try:
        time.sleep(0.2)  # the stuck load holds its own lock now
        began = time.monotonic()
        assert loaded.open("hi").next_word("", 2).tokens >= 1  # a loaded model answers at once
        other = TransformersBackend(tiny_sentencepiece_model, device="cpu", dtype="float32")
        assert other.open("hi").next_word("", 2).tokens >= 1  # another model loads beside it
        assert time.monotonic() - began < 20 and stuck.is_alive()
    finally:
        release.set()
        stuck.join(60)
