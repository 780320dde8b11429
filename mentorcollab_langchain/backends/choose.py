"""Which local backend runs a model: llama.cpp in process, or transformers and torch.

On a CPU, llama.cpp decodes the packaged GGUF models about three times faster than torch, so ``auto``
takes it wherever it can run the model: a packaged model (the only files it loads are sha256-verified
GGUFs), on the CPU, with llama-cpp-python installed, and no dtype or torch compiling asked for (GGUF
weights keep their own quantization). Everything else goes to transformers: GPUs, Hugging Face ids and
folders, and the features only it has (hidden states, for the mlp verifier; compiled decoding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from mentorcollab_langchain.backends.llama_cpp import LlamaCppBackend, llama_library
from mentorcollab_langchain.backends.transformers import TransformersBackend, pick_device
from mentorcollab_langchain.errors import BackendError, ConfigError
from mentorcollab_langchain.models.registry import PACKAGED_MODELS

BackendName = Literal["auto", "llama.cpp", "transformers"]
BACKEND_NAMES: tuple[BackendName, ...] = ("auto", "llama.cpp", "transformers")


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python imports here (it is an optional dependency)."""
    try:
        llama_library()
    except BackendError:
        return False
    return True


def make_backend(
    model: str,
    backend: str = "auto",
    *,
    device: str = "auto",
    dtype: str = "auto",
    threads: int | None = None,
    prefix_cache: bool = True,
    torch_compile: bool = False,
    report: Callable[[str], None] = lambda message: None,
) -> LlamaCppBackend | TransformersBackend:
    """A backend for ``model``: ``backend`` names one, or ``auto`` picks as the module docstring says.

    ``threads`` sets llama.cpp's threads (default: the cores); two jobs sharing the cores run best with
    one thread each. ``prefix_cache`` lets a request take over the prompt tokens an earlier one left in the
    cache, on either backend. ``torch_compile`` decodes over a static cache with a compiled step
    (``TransformersBackend``)."""
    if backend not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {backend!r}; use {', '.join(BACKEND_NAMES)}")
    if backend == "auto":
        on_cpu = pick_device(device).type == "cpu"
        fits = model in PACKAGED_MODELS and on_cpu and dtype == "auto" and not torch_compile
        backend = "llama.cpp" if fits and llama_cpp_available() else "transformers"
    if backend == "transformers":
        return TransformersBackend(
            model, device=device, dtype=dtype, prefix_cache=prefix_cache, torch_compile=torch_compile, report=report
        )
    if device not in {"auto", "cpu"} or dtype != "auto":
        raise ConfigError(
            f"the llama.cpp backend runs GGUF weights as they are, on the CPU; device={device!r} and "
            f"dtype={dtype!r} need backend='transformers'"
        )
    if torch_compile:
        raise ConfigError("torch_compile compiles torch's decoding; it needs backend='transformers' (or 'auto')")
    return LlamaCppBackend(model, n_threads=threads, prefix_cache=prefix_cache, report=report)
