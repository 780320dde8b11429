"""Calibrate the uncertain policy's threshold to a probe share, on prompts that are never evaluated.

The uncertain policy probes a word when the generator's doubt about its first token passes
``uncertainty_threshold``. How often that happens depends on the task as much as on the model: the
top-two share of a five-option answer letter sits lower than a four-option one's, so the threshold that
probes half of ARC-Challenge probes four fifths of CommonsenseQA. And on a few-shot prompt the mentor's
compute is close to the share of questions it is asked about at all. A user with a compute budget
therefore wants a probe *share*, and needs the threshold that gives it on their task.

Calibration runs the generator alone on development prompts, reads the uncertainty of every word it
writes (``word_uncertainties``), and picks the threshold at which the wanted share of words is probed
(``calibrate``). ``calibrate_on_prompts`` does both on your own prompts, ``calibrate_on_questions`` on a
benchmark slice, each question prompted, stopped and budgeted exactly as ``mentorcollab eval`` runs it.
It needs no mentor, so it costs the generator's time only. The policy's random probes (``probe_rate``)
count toward the share: the threshold is set so that uncertainty probes
``(share - probe_rate) / (1 - probe_rate)`` of the words. Where an answer is one word (a
multiple-choice letter) the share of words is the share of questions.

The answers differ from a collaboration's after its first adoption, so on long answers the share is what
the generator alone would be probed at; ``Calibration.answer_share`` says how many answers that
touches.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mentorcollab_langchain.backends.base import Backend, Piece, Prompt
from mentorcollab_langchain.engine import CollabConfig, CollabState, collaborate
from mentorcollab_langchain.engine.policies import NO_MORE_PROBES, SIGNALS_PROBED_ABOVE, uncertainty, unsure
from mentorcollab_langchain.errors import ConfigError, UnknownModelError
from mentorcollab_langchain.evals.data import Question
from mentorcollab_langchain.evals.prompts import PromptKind, build_prompt
from mentorcollab_langchain.evals.runner import question_config
from mentorcollab_langchain.models.identity import weights_sha256

# What a calibration record sets: the threshold, the signal it is a threshold of, and the random probe rate
# whose share it was calibrated around.
CALIBRATED_SETTINGS = ("uncertainty_signal", "uncertainty_threshold", "probe_rate")


@dataclass(frozen=True)
class Calibration:
    """A threshold calibrated to a probe share, and what it probed on the calibration prompts."""

    uncertainty_signal: str
    uncertainty_threshold: float
    probe_share: float  # asked for, random probes included
    probe_rate: float  # the random floor it was calibrated with
    word_share: float  # of the words, probed by uncertainty at this threshold on the calibration prompts
    answer_share: float  # of the answers with at least one word probed by uncertainty
    words: int
    answers: int

    def as_dict(self) -> dict[str, Any]:
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


def word_uncertainties(prompt: Prompt, generator: Backend, config: CollabConfig) -> list[float]:
    """The uncertainty (``config.uncertainty_signal``) of each word the generator writes alone for ``prompt``
    under ``config`` (its prompt style, stops and budget), as the uncertain policy reads it."""
    listening = _Listening(config.uncertainty_signal)
    alone = config.model_copy(update={"read_ahead": False})
    for _ in collaborate(prompt, generator, generator, config=alone, state=CollabState(), probe_policy=listening):
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


def check_share(probe_share: float, config: CollabConfig) -> None:
    """A share below the random probes alone, or above every word, is no share the threshold can give."""
    if not config.probe_rate <= probe_share <= 1.0:
        raise ConfigError(
            f"probe share {probe_share} must lie between the random probe rate ({config.probe_rate}) and 1"
        )


def calibrate(answers: Sequence[Sequence[float]], config: CollabConfig, probe_share: float) -> Calibration:
    """The ``uncertainty_threshold`` at which ``config``'s uncertain policy probes ``probe_share`` of the words
    whose uncertainties are ``answers`` (``word_uncertainties`` of each calibration prompt), random probes at
    ``config.probe_rate`` included."""
    check_share(probe_share, config)
    values = [value for answer in answers for value in answer]
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
        answer_share=sum(any(map(probed, answer)) for answer in answers) / len(answers),
        words=len(values),
        answers=len(answers),
    )


def calibrate_on_prompts(
    prompts: Sequence[Prompt],
    generator: Backend,
    config: CollabConfig,
    probe_share: float,
    log: Callable[[str], None] = print,
) -> Calibration:
    """``calibrate`` on your own prompts, each run under ``config`` (its prompt style, stops and budget)."""
    return _calibrate_runs([(prompt, config) for prompt in prompts], generator, config, probe_share, log)


def calibrate_on_questions(
    questions: Sequence[Question],
    generator: Backend,
    config: CollabConfig,
    prompt: PromptKind,
    probe_share: float,
    log: Callable[[str], None] = print,
) -> Calibration:
    """``calibrate`` on benchmark questions, each prompted and stopped as ``mentorcollab eval`` runs it."""
    runs = []
    for question in questions:
        built = build_prompt(question, prompt)
        runs.append((built.prompt, question_config(config, question, built)))
    return _calibrate_runs(runs, generator, config, probe_share, log)


def _calibrate_runs(
    runs: Sequence[tuple[Prompt, CollabConfig]],
    generator: Backend,
    config: CollabConfig,
    probe_share: float,
    log: Callable[[str], None],
) -> Calibration:
    if not runs:
        raise ConfigError("nothing to calibrate on: no prompts")
    check_share(probe_share, config)
    answers = []
    for number, (prompt, run_config) in enumerate(runs, 1):
        answers.append(word_uncertainties(prompt, generator, run_config))
        if number % 20 == 0 or number == len(runs):
            log(f"calibrate: {number}/{len(runs)} prompts, {sum(map(len, answers))} words")
    return calibrate(answers, config, probe_share)


def read_calibration(path: str | Path, generator: str) -> dict[str, Any]:
    """The uncertain policy's settings from a ``mentorcollab calibrate --out`` record, as ``CollabConfig`` (or
    ``ChatMentorCollab``) keywords, once the file is known to be one and to have been made for ``generator``:
    a threshold is one model's confidence, meaningless for another's.

    The record names its generator by its weights' sha256 (``models.identity.weights_sha256``), so a folder
    holding the same weights passes and another model under the same name does not. A record without it
    (written before records carried it) is matched by name.
    """
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"calibration {path}: cannot read it as JSON ({error})") from error
    wanted = (*CALIBRATED_SETTINGS, "generator")
    missing = [name for name in wanted if name not in record] if isinstance(record, dict) else list(wanted)
    if missing:
        raise ConfigError(f"calibration {path}: not a calibration record (no {', '.join(missing)})")
    made_for = f"calibration {path} was made for the generator {record['generator']!r}, not {generator!r}"
    if "generator_sha256" not in record:
        if record["generator"] != generator:
            raise ConfigError(f"{made_for}; calibrate again with this generator")
    else:
        try:
            found = weights_sha256(generator)
        except UnknownModelError as error:
            raise ConfigError(f"calibration {path}: cannot check it against the generator: {error}") from None
        if found != record["generator_sha256"]:
            raise ConfigError(
                f"{made_for} (weights sha256 {record['generator_sha256'][:16]}… against {found[:16]}…); "
                "calibrate again with this generator"
            )
    return {name: record[name] for name in CALIBRATED_SETTINGS}
