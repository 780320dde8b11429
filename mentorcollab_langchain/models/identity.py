"""A model's identity by its weights, whatever name it was given by.

What a generator has learned to mean (the hidden states a trained verifier reads, the confidence a
calibrated threshold cuts) belongs to its weights, not to its name: the packaged SmolLM2, the folder it is
converted to and a copy of that folder are one model, and two folders both called ``model`` may be two.
So records made for a generator carry this sha256, and are checked against it before they are used.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from mentorcollab_langchain.errors import UnknownModelError
from mentorcollab_langchain.models.registry import CONVERSION_MARKER, PACKAGED_MODELS, sha256_of


def weights_sha256(model: str) -> str:
    """A sha256 that names ``model``'s weights.

    - a packaged model: its pinned GGUF sha256 (checked whenever the GGUF is assembled);
    - the folder a packaged model was converted to (it holds the conversion's record): the same sha256,
      since its weights are that GGUF's, dequantized;
    - any other local folder: a hash of its safetensors files, each by name and sha256;
    - a Hugging Face id: the same hash over its snapshot in the local cache.

    Raises ``UnknownModelError`` for a model that cannot be hashed (no safetensors, not in the cache).
    """
    if model in PACKAGED_MODELS:
        return PACKAGED_MODELS[model].sha256
    folder = Path(model).expanduser()
    if not folder.is_dir():
        folder = _cached_snapshot(model)
    converted_from = _conversion_source(folder)
    if converted_from is not None:
        return converted_from
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UnknownModelError(f"cannot identify the model {model!r} by its weights: no safetensors files in {folder}")
    return _folder_hash(tuple((str(file), file.stat().st_mtime_ns, file.stat().st_size) for file in files))


def _conversion_source(folder: Path) -> str | None:
    """The packaged GGUF's sha256, for a folder this package converted from it (the pin, not the record's word)."""
    try:
        record = json.loads((folder / CONVERSION_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    packaged = PACKAGED_MODELS.get(record.get("model")) if isinstance(record, dict) else None
    if packaged is None or record.get("sha256") != packaged.sha256:
        return None
    return packaged.sha256


def _cached_snapshot(model: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception as error:  # noqa: BLE001 - any failure means we cannot hash it
        raise UnknownModelError(
            f"cannot identify the model {model!r} by its weights: it is neither a packaged model, a local folder, "
            f"nor a Hugging Face snapshot in the local cache ({type(error).__name__})"
        ) from None


@lru_cache(maxsize=16)
def _folder_hash(files: tuple[tuple[str, int, int], ...]) -> str:
    """sha256 over each file's name and sha256 (cached by path, mtime and size: hashing weights takes seconds)."""
    digest = hashlib.sha256()
    for path, _mtime, _size in files:
        digest.update(f"{Path(path).name}:{sha256_of(Path(path))}\n".encode())
    return digest.hexdigest()
