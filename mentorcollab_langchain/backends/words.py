"""Where words begin, for both tokenizer families.

The method's unit is a word: a token plus the tokens that follow it until the next token starts with
whitespace. Whether a token starts with whitespace is read from its vocabulary string, whose spelling
depends on the tokenizer family:

- byte-level BPE (GPT-2, SmolLM, Qwen) maps each byte to a printable character: a space is ``Ġ``,
  a newline ``Ċ``, a tab ``ĉ``;
- SentencePiece-style vocabularies (Llama, Gemma) mark a leading space with ``▁`` and may keep other
  whitespace literally or as byte tokens such as ``<0x0A>``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def _byte_level_whitespace() -> frozenset[str]:
    """The printable stand-ins that byte-level BPE uses for whitespace bytes.

    Byte-level BPE keeps printable bytes as themselves and shifts the others (space and control
    characters among them) to code points from 256 upward, in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(
        range(ord("®"), ord("ÿ") + 1)
    )
    shifted, stand_in = {}, 256
    for byte in range(256):
        if byte not in printable:
            shifted[byte] = chr(stand_in)
            stand_in += 1
    return frozenset(shifted[byte] for byte in b" \t\n\r\x0b\x0c")


_BYTE_LEVEL_WHITESPACE = _byte_level_whitespace()
_SENTENCEPIECE_WHITESPACE_BYTES = frozenset({"<0x20>", "<0x09>", "<0x0A>", "<0x0D>", "<0x0B>", "<0x0C>"})


def whitespace_start_table(vocabulary: Sequence[str | None]) -> list[bool]:
    """For each token id, whether its text starts with whitespace."""
    # Either family may hold a stray token of the other's spelling, so the majority decides.
    byte_level_marks = sum(1 for piece in vocabulary if piece and piece.startswith("Ġ"))
    sentencepiece_marks = sum(1 for piece in vocabulary if piece and piece.startswith("▁"))
    byte_level = byte_level_marks > sentencepiece_marks

    def starts_with_whitespace(piece: str | None) -> bool:
        if not piece:
            return False
        if byte_level:
            return piece[0] in _BYTE_LEVEL_WHITESPACE
        return piece[0] == "▁" or piece[0].isspace() or piece in _SENTENCEPIECE_WHITESPACE_BYTES

    return [starts_with_whitespace(piece) for piece in vocabulary]


def response_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer for answer text that sits after a prompt: no dummy prefix, no stripped first space.

    SentencePiece tokenizers of the Llama-2 family prepend ``▁`` to whatever they encode and strip the
    first space when they decode, as if every text began a document. Answer text never does: encoding
    ``"A"`` must give ``A``, not ``▁A``, and decoding a word must keep its leading space. This returns
    the ``tokenizers`` tokenizer with those two steps taken out, or None where the tokenizer has neither
    (byte-level BPE, Gemma), so the tokenizer itself serves.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    # Only these three small parts are read; the whole tokenizer, whose vocabulary may hold 262k tokens (seconds
    # to serialize and parse), is serialized only where one of them changes.
    spec = {name: _component(getattr(backend, name)) for name in ("normalizer", "pre_tokenizer", "decoder")}
    changed = False

    def without(component: dict | None, kind: str, key: str) -> dict | None:
        nonlocal changed
        if component is None:
            return None
        if component.get("type") == kind:
            changed = True
            return None
        if component.get("type") == "Sequence":
            kept = [part for part in component[key] if part.get("type") != kind]
            changed |= len(kept) != len(component[key])
            return {**component, key: kept}
        return component

    spec["normalizer"] = without(spec.get("normalizer"), "Prepend", "normalizers")
    spec["decoder"] = without(spec.get("decoder"), "Strip", "decoders")
    for metaspace in _metaspaces(spec.get("pre_tokenizer")):  # the newer spelling of the dummy prefix
        if metaspace.get("prepend_scheme", "always") != "never":
            metaspace["prepend_scheme"], changed = "never", True
    if not changed:
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_str(json.dumps(json.loads(backend.to_str()) | spec))


def _component(component: Any) -> dict | None:
    """A tokenizer part (normalizer, pre-tokenizer, decoder) as the JSON that ``Tokenizer.to_str`` writes for it."""
    return None if component is None else json.loads(component.__getstate__())


def _metaspaces(component: dict | None) -> list[dict]:
    if component is None:
        return []
    if component.get("type") == "Metaspace":
        return [component]
    return [found for part in component.get("pretokenizers", []) for found in _metaspaces(part)]
