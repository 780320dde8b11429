"""Prompts per benchmark: chat-style for instruction-tuned models, the standard few-shot context for
base models (and for instruction-tuned ones where it works better).

``chat`` gives a list of messages (each backend renders it with its own chat template);
``fewshot`` gives the ready completion prompt from the benchmark files, passed raw, with the
benchmark's stop strings (the answer ends where the next "Question:" would begin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mentorcollab_langchain.backends.base import Prompt
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.evals.data import Question

PromptKind = Literal["chat", "fewshot"]
PROMPT_KINDS = ("chat", "fewshot")
# Bump when a prompt's wording changes: it is part of every result's config hash.
PROMPT_VERSION = 1

MATH_WORD_SYSTEM = (
    "You are a careful math tutor. Solve the problem step by step in short plain sentences, without code. "
    "End with the line 'The answer is N.' where N is the final number."
)
MATH_SYSTEM = (
    "Solve the problem step by step in plain sentences, without code. Put the final answer in \\boxed{}."
)
CHOICE_INSTRUCTION = "Answer with the letter of the correct option only."
ANSWER_BUDGET = {"number": 256, "math": 512, "choice": 16}
"""``max_new_tokens`` per kind of answer: a GSM8K solution, a MATH solution, a multiple-choice letter."""


@dataclass(frozen=True)
class BuiltPrompt:
    prompt: Prompt
    style: Literal["chat", "raw"]  # CollabConfig.prompt_style
    stop: tuple[str, ...]


def build_prompt(question: Question, kind: PromptKind) -> BuiltPrompt:
    if kind == "fewshot":
        if not question.fewshot:
            raise ConfigError(f"{question.benchmark} has no few-shot context; use the chat prompt")
        return BuiltPrompt(question.fewshot, "raw", question.stop)
    if kind != "chat":
        raise ConfigError(f"unknown prompt kind {kind!r}; choose one of {', '.join(PROMPT_KINDS)}")
    if question.kind == "number":
        messages = [{"role": "system", "content": MATH_WORD_SYSTEM}, {"role": "user", "content": question.question}]
        return BuiltPrompt(messages, "chat", ())
    if question.kind == "math":
        messages = [{"role": "system", "content": MATH_SYSTEM}, {"role": "user", "content": question.question}]
        return BuiltPrompt(messages, "chat", ())
    options = "\n".join(f"{label}. {choice}" for label, choice in zip(question.labels, question.choices, strict=True))
    content = f"{question.question}\n\n{options}\n\n{CHOICE_INSTRUCTION}"
    return BuiltPrompt([{"role": "user", "content": content}], "chat", ("\n\n",))
