"""``<think>...</think>`` reasoning, taken out of the answer as it streams.

Reasoning models (Qwen3, DeepSeek-R1 distills, SmolLM3) open their answer with a ``<think>`` block. It
is not the answer: a user reads it apart, and a parser that reads the answer (tool calls, structured
output) must not read it. LangChain's convention for models that write reasoning as text is
``additional_kwargs["reasoning_content"]`` (ChatDeepSeek, ChatOllama, ChatGroq do so), which
``AIMessage.content_blocks`` turns into a ``{"type": "reasoning"}`` block ahead of the text; streamed
pieces of it concatenate when chunks are added, as the content does.

Only a block at the very start of the answer counts (after whitespace): a ``<think>`` later on is text
the model wrote, and stays in the answer. The tags, and the whitespace around the reasoning and before
the answer, are dropped. A block the token limit cut off is all reasoning.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"


def _partial_tag(text: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``CLOSE``."""
    for size in range(min(len(CLOSE) - 1, len(text)), 0, -1):
        if CLOSE.startswith(text[-size:]):
            return size
    return 0


class ReasoningSplitter:
    """Splits an answer fed piece by piece into ``(reasoning, content)`` pieces.

    Text that may still turn out to be a tag (``<thi``, ``</th``) or whitespace that may still turn out
    to end the reasoning is kept until the next piece decides it; ``finish`` gives what is kept.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        # "start": no text seen but whitespace or the start of OPEN; "thinking"; "answer".
        self._state = "start" if enabled else "answer"
        self._kept = ""
        self._reasoning_started = False
        self._strip_content = False  # after a reasoning block, until the answer's first visible character

    def feed(self, text: str) -> tuple[str, str]:
        """The reasoning and the content that ``text`` (with what was kept) makes certain."""
        self._kept += text
        reasoning = ""
        if self._state == "start":
            begun = self._kept.lstrip()
            if not begun or OPEN.startswith(begun):
                return "", ""
            if not begun.startswith(OPEN):
                self._state = "answer"
            else:
                self._state, self._kept = "thinking", begun[len(OPEN) :]
        if self._state == "thinking":
            end = self._kept.find(CLOSE)
            if end < 0:
                safe = len(self._kept) - _partial_tag(self._kept)
                safe = len(self._kept[:safe].rstrip())  # whitespace before the tag is not reasoning
                return self._reasoning(self._kept[:safe], keep=self._kept[safe:]), ""
            reasoning = self._reasoning(self._kept[:end].rstrip(), keep=self._kept[end + len(CLOSE) :])
            self._state, self._strip_content = "answer", True
        content, self._kept = self._kept, ""
        if self._strip_content:
            content = content.lstrip()
            self._strip_content = not content
        return reasoning, content

    def _reasoning(self, text: str, *, keep: str) -> str:
        if not self._reasoning_started:
            text = text.lstrip()
            self._reasoning_started = bool(text)
        self._kept = keep
        return text

    def finish(self) -> tuple[str, str]:
        """What was kept, once the answer is complete: reasoning if the block never closed."""
        kept, self._kept = self._kept, ""
        if self._state == "thinking":
            return self._reasoning(kept.rstrip(), keep=""), ""
        self._state = "answer"  # from "start": whitespace or an unfinished "<thi" was the model's answer
        return "", kept.lstrip() if self._strip_content else kept


def split_reasoning(text: str) -> tuple[str, str]:
    """``(reasoning, content)`` of a whole answer, as ``ReasoningSplitter`` streams them."""
    splitter = ReasoningSplitter()
    reasoning, content = splitter.feed(text)
    more_reasoning, more_content = splitter.finish()
    return reasoning + more_reasoning, content + more_content
