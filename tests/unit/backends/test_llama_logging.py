"""llama.cpp's own log lines reach stderr by their real level: errors yes, a loader's warnings not by default.

llama-cpp-python 0.3.36 reads ggml's levels by an older numbering, which showed the Qwen mentor's harmless
"control-looking token ... probably a bug in the model" warning on every first load and hid errors.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is installed by scripts/install.sh")

from mentorcollab_langchain.backends.llama_cpp import _llama_log_callback, llama_library
from mentorcollab_langchain.models import PACKAGED_MODELS
from mentorcollab_langchain.models.registry import is_installed
from tests.paths import REPO

DEBUG, INFO, WARN, ERROR, CONT = 1, 2, 3, 4, 5  # ggml.h


def test_each_line_is_shown_by_its_level(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("llama-cpp-python")
    forward = _llama_log_callback(llama_library(), logger)
    before = logger.level
    try:
        logger.setLevel(logging.ERROR)  # the default llama_library sets
        for level, text in ((DEBUG, b"debug\n"), (INFO, b"info\n"), (WARN, b"warning"), (CONT, b" goes on\n"),
                            (ERROR, b"error"), (CONT, b" goes on\n")):
            forward(level, text, None)
        assert capsys.readouterr().err == "error goes on\n"
        logger.setLevel(logging.WARNING)  # a user who asks for warnings gets them
        forward(WARN, b"warning\n", None)
        assert capsys.readouterr().err == "warning\n"
    finally:
        logger.setLevel(before)


@pytest.mark.slow  # loads the 1.1 GB mentor in a fresh process: about 7 s
def test_loading_the_packaged_mentor_prints_no_loader_warning() -> None:
    if not is_installed(PACKAGED_MODELS["qwen2.5-coder-1.5b-instruct"]):
        pytest.skip("qwen2.5-coder-1.5b-instruct is not installed")
    code = ("from mentorcollab_langchain.backends import LlamaCppBackend; "
            "LlamaCppBackend('qwen2.5-coder-1.5b-instruct', n_threads=1).loaded")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert "control-looking token" not in loaded.stderr and "llama" not in loaded.stderr.lower(), loaded.stderr
