"""Named packaged models: install source, pinned versions, sha256 and the conversion cache."""

from mentorcollab_langchain.models.registry import (
    DEFAULT_GENERATOR,
    DEFAULT_MENTOR,
    PACKAGED_MODELS,
    PackagedModel,
    cache_dir,
    converted_dir,
    ensure_converted,
    get_packaged_model,
    is_converted,
    is_installed,
    resolve_model,
)

__all__ = [
    "DEFAULT_GENERATOR",
    "DEFAULT_MENTOR",
    "PACKAGED_MODELS",
    "PackagedModel",
    "cache_dir",
    "converted_dir",
    "ensure_converted",
    "get_packaged_model",
    "is_converted",
    "is_installed",
    "resolve_model",
]
