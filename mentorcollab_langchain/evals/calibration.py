"""Calibrate the uncertain policy's threshold to a probe share, on questions that are never evaluated.

The uncertain policy probes a word when the generator's doubt about its first token passes
``uncertainty_threshold``. How often that happens depends on the task as much as on the model: the
top-two share of a five-option answer letter sits lower than a four-option one's, so the threshold that
probes half of ARC-Challenge probes four fifths of CommonsenseQA. And on a few-shot prompt the mentor's
compute is close to the share of questions it is asked about at all. A user with a compute budget
therefore wants a probe *share*, and needs the threshold that gives it on their task.

Calibration runs the generator alone on a development slice exactly as the evaluation runs it (same
prompt, stops and answer budget), reads the uncertainty of every word it writes, and picks the
threshold at which the wanted share of words is probed. It needs no mentor, so it costs the generator's
time only. The policy's random probes (``probe_rate``) count toward the share: the threshold is set so
that uncertainty probes ``(share - probe_rate) / (1 - probe_rate)`` of the words. Where an answer is one
word (a multiple-choice letter) the share of words is the share of questions.

The answers differ from a collaboration's after its first adoption, so on long answers the share is what
the generator alone would be probed at; ``Calibration.question_share`` says how many questions that
touches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from mentorcollab_langchain.backends.base import Backend, Piece
from mentorcollab_langchain.engine import CollabConfig, CollabState, collaborate
from mentorcollab_langchain.engine.policies import NO_MORE_PROBES, SIGNALS_PROBED_ABOVE, uncertainty, unsure
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.evals.data import Question
from mentorcollab_langchain.evals.prompts import PromptKind, build_prompt
from mentorcollab_langchain.evals.runner import question_config


@dataclass(frozen=True)
class Calibration:
    """A threshold calibrated to a probe share, and the evidence for it (written as JSON by the CLI)."""

    uncertainty_signal: str
    uncertainty_threshold: float
    probe_share: float  # asked for, random probes included
    probe_rate: float  # the random floor it was calibrated with
    word_share: float  # of the words, probed by uncertainty at this threshold on the calibration data
    question_share: float  # of the questions with at least one word probed by uncertainty
    words: int
    questions: int
    benchmark: str
    split: str
    question_ids: list[str]  # so a test can check that no evaluation sample holds one
    generator: str
    prompt: str
    max_new_tokens: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class _Listening:
    """A probe policy that never probes and keeps the uncertainty of every word the generator writes."""

    name = "calibrating"
    needs_confidence = True

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.values: list[float] = []

    def words_until_probe(self, config: CollabConfig, gap_index: int) -> int:
        return NO_MORE_PROBES

    def probe_word(self, word: Piece, config: CollabConfig) -> bool:
        value = uncertainty(word, self.signal)
        if value is not None:
            self.values.append(value)
        return False


def word_uncertainties(
    question: Question, generator: Backend, config: CollabConfig, prompt: PromptKind
) -> list[float]:
    """The uncertainty of each word the generator writes alone for ``question``, as the policy reads it."""
    built = build_prompt(question, prompt)
    listening = _Listening(config.uncertainty_signal)
    alone = question_config(config, question, built).model_copy(update={"read_ahead": False})
    for _ in collaborate(built.prompt, generator, generator, config=alone, state=CollabState(),
                         probe_policy=listening):
        pass
    return listening.values


def threshold_for_share(values: Sequence[float], share: float, signal: str) -> float:
    """The threshold at which the uncertain policy probes ``share`` of the words with these ``values``.

    It lies halfway between the last value probed and the first one not, so that a value equal to either
    falls on its side; a share of 0 or 1 gives a threshold just past the extreme value.
    """
    if not values:
        raise ConfigError("no word to calibrate on: the generator wrote nothing the policy reads")
    above = signal in SIGNALS_PROBED_ABOVE
    ordered = sorted(values, reverse=above)  # most doubtful first
    probed = round(share * len(ordered))
    if probed == 0:
        return math.nextafter(ordered[0], math.inf if above else -math.inf)
    if probed == len(ordered):
        return math.nextafter(ordered[-1], -math.inf if above else math.inf)
    return (ordered[probed - 1] + ordered[probed]) / 2


def calibrate(
    questions: Sequence[Question],
    generator: Backend,
    config: CollabConfig,
    prompt: PromptKind,
    probe_share: float,
    log: Callable[[str], None] = print,
) -> Calibration:
    """The ``uncertainty_threshold`` at which ``config``'s uncertain policy probes ``probe_share`` of the words
    the generator writes on ``questions``, random probes at ``config.probe_rate`` included."""
    if not questions:
        raise ConfigError("no questions to calibrate on")
    if not config.probe_rate <= probe_share <= 1.0:
        raise ConfigError(
            f"probe share {probe_share} must lie between the random probe rate ({config.probe_rate}) and 1"
        )
    per_question = []
    for number, question in enumerate(questions, 1):
        per_question.append(word_uncertainties(question, generator, config, prompt))
        if number % 20 == 0 or number == len(questions):
            log(f"calibrate: {number}/{len(questions)} questions, {sum(map(len, per_question))} words")
    values = [value for answer in per_question for value in answer]
    uncertain_share = (probe_share - config.probe_rate) / (1.0 - config.probe_rate) if config.probe_rate < 1 else 1.0
    signal = config.uncertainty_signal
    threshold = threshold_for_share(values, uncertain_share, signal)

    def probed(value: float) -> bool:
        return unsure(value, signal, threshold)

    return Calibration(
        uncertainty_signal=signal,
        uncertainty_threshold=threshold,
        probe_share=probe_share,
        probe_rate=config.probe_rate,
        word_share=sum(map(probed, values)) / len(values),
        question_share=sum(any(map(probed, answer)) for answer in per_question) / len(per_question),
        words=len(values),
        questions=len(questions),
        benchmark=questions[0].benchmark,
        split=questions[0].split,
        question_ids=[question.id for question in questions],
        generator=generator.model_name,
        prompt=prompt,
        max_new_tokens=config.max_new_tokens,
    )
