"""Training the ``mlp`` verifier: collect divergences on training data, label them, train, write the card.

The command line (``mentorcollab train-verifier``, ``cli/train_verifier.py``) parses its flags, loads the
models and calls these functions; everything that decides what the verifier learns lives here.

Collection runs the method itself (the engine's steps) on benchmark questions that the evaluation never
samples, probing the mentor at every word and adopting the mentor at every divergence (so the answer
keeps following the stronger model and later divergences stay on sensible text). At each divergence
it records the verifier's inputs (``verifiers.mlp.divergence_features``, the very function the trained
verifier calls at run time) and the self-consult-both-orders score, the baseline to beat.

Labels say which choice leads to the gold answer:

- multiple choice (the answer is one letter): the segment whose option letter, read before the
  answer's stop string, is the gold letter wins; a divergence where neither or both segments name it is
  dropped. This is exact: the segment is the whole answer.
- GSM8K: a rollout of each branch to the end would label almost nothing here, because the 135M
  generator solves about 1 problem in 100 (docs/results) and nearly every pair of rollouts ends in a tie
  (both wrong). The cheaper rule reads the worked solution that ships with each problem: a segment that
  writes a number found neither in the problem nor in the reference solution has taken a wrong step.
  The segment whose numbers all appear there wins against one that writes a foreign number; a
  divergence where both or neither do, or a segment without numbers, is dropped.

Training data never overlaps the evaluation sample: the evaluation takes ``--limit 100`` from offset 0
of each benchmark's default split in the fixed shuffled order (``evals.data``), and a training source
on such a split must start at ``MIN_TRAINING_OFFSET`` or later (``check_disjoint``; a test proves it
on the ids). Other splits (ARC validation, OpenBookQA validation) are never evaluated.

Questions of one benchmark share their few-shot examples, so each model keeps one cursor per source
positioned after that shared prefix and each question is asked through a ``_QuestionCursor`` that puts
the question's own text in front of the response: the models read the few-shot examples once per source
instead of once per question, and the engine's steps run unchanged.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from mentorcollab_langchain.backends.base import Backend, ContinuationScore, Cursor, Piece
from mentorcollab_langchain.engine.config import CollabConfig
from mentorcollab_langchain.engine.policies import NO_MORE_PROBES, ProbePolicy, get_probe_policy
from mentorcollab_langchain.engine.state import CollabState
from mentorcollab_langchain.engine.steps import run_steps
from mentorcollab_langchain.engine.team import Team
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.evals.data import DEFAULT_SPLITS, Question, resolve_split
from mentorcollab_langchain.evals.extract import _NUMBER, _clean_number, extract_choice
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.evals.runner import question_seed
from mentorcollab_langchain.models.identity import weights_sha256
from mentorcollab_langchain.verifiers.base import Choice, Verdict, VerifyRequest
from mentorcollab_langchain.verifiers.mlp import (
    CARD_FORMAT,
    MLPVerifier,
    build_network,
    divergence_features,
    feature_names,
)
from mentorcollab_langchain.verifiers.self_consult import SelfConsultVerifier

EVALUATION_LIMIT = 100
"""The evaluation's sample: the first 100 questions of each benchmark's default split (docs/results)."""

MIN_TRAINING_OFFSET = {"gsm8k": 1000}
"""Where training may start on a split the evaluation samples: GSM8K after its tuning range, others at 200."""
DEFAULT_MIN_OFFSET = 200

DEFAULT_SOURCES = (
    "arc_challenge:validation:0:150",
    "arc_easy:validation:0:150",
    "openbookqa:validation:0:150",
    "csqa:validation:200:150",
)
"""What the shipped verifier was trained on: multiple choice from sets the evaluation never samples
(CSQA only past its evaluation range). GSM8K problems after index 1000 (``gsm8k:test:1000:N``) can be
added; on this project's 2 shared cores they cost minutes of mentor time each, so the shipped verifier
was trained without them."""

COLLECTION_SETTINGS = {"probe_policy": "uncertain", "probe_rate": 1.0, "segment_tokens": 4, "repetition_guard": False}
"""The collaboration settings while collecting, unless the command line sets them: GSM8K answers probed
at every word (rate 1, so the uncertain policy's threshold adds nothing), 4-token segments (a
multiple-choice letter and what follows it), and no early stop on repetition."""

MAX_NEW_TOKENS = {"choice": 16, "number": 64}
"""Answer budget while collecting: the whole multiple-choice answer; the first steps of a GSM8K solution
(every word is probed there, so a full 256-token solution would cost minutes of mentor time each)."""


@dataclass(frozen=True)
class TrainingSource:
    """A slice of a benchmark split: ``limit`` questions from ``offset`` in the fixed shuffled order."""

    benchmark: str
    split: str
    offset: int
    limit: int

    @classmethod
    def parse(cls, spec: str) -> TrainingSource:
        """``BENCHMARK:SPLIT:OFFSET:LIMIT``, e.g. ``csqa:validation:200:100``."""
        parts = spec.split(":")
        if len(parts) != 4:
            raise ConfigError(f"a training source is BENCHMARK:SPLIT:OFFSET:LIMIT, got {spec!r}")
        benchmark, split, offset, limit = parts
        try:
            source = cls(benchmark, resolve_split(benchmark, split), int(offset), int(limit))
        except ValueError as error:
            raise ConfigError(f"bad training source {spec!r}: {error}") from None
        check_disjoint(source)
        return source

    def __str__(self) -> str:
        return f"{self.benchmark}:{self.split}:{self.offset}:{self.limit}"


def check_disjoint(source: TrainingSource) -> None:
    """Refuse a source that could reach into the evaluation's sample of its benchmark."""
    if source.split != DEFAULT_SPLITS[source.benchmark]:
        return
    minimum = MIN_TRAINING_OFFSET.get(source.benchmark, DEFAULT_MIN_OFFSET)
    if source.offset < minimum:
        raise ConfigError(
            f"{source}: {source.benchmark}/{source.split} is what the evaluation samples (its first "
            f"{EVALUATION_LIMIT} questions); training there must start at offset {minimum} or later"
        )


# -- one divergence --------------------------------------------------------------------------------


@dataclass
class DivergenceRecord:
    """One divergence seen while collecting: where, both segments, the verifier inputs, the baseline's
    score and (once labelled) which choice leads to the gold answer."""

    benchmark: str
    split: str
    question_id: str
    position: int
    generator_segment: str
    mentor_segment: str
    features: list[float]
    self_consult_both_orders: float
    label: Choice | None = None


def label_choice(question: Question, generator_segment: str, mentor_segment: str) -> Choice | None:
    """The segment that answers the gold letter (read before the answer's stop string), else None."""

    def letter(segment: str) -> str | None:
        return extract_choice(_cut_at_stops(segment, question.stop), question.labels, question.choices)

    generator_right = letter(generator_segment) == question.gold
    mentor_right = letter(mentor_segment) == question.gold
    if generator_right == mentor_right:
        return None
    return "mentor" if mentor_right else "generator"


def label_number(question: Question, generator_segment: str, mentor_segment: str) -> Choice | None:
    """The segment whose numbers all appear in the problem or its worked solution, against one that writes
    a number found in neither (see the module docstring); else None."""
    known = _numbers(question.question) | _numbers(question.reference)

    def verdict(segment: str) -> bool | None:
        written = _numbers(_cut_at_stops(segment, question.stop))
        return None if not written else written <= known

    generator_ok, mentor_ok = verdict(generator_segment), verdict(mentor_segment)
    if generator_ok is None or mentor_ok is None or generator_ok == mentor_ok:
        return None
    return "mentor" if mentor_ok else "generator"


def _numbers(text: str) -> set[str]:
    return {number for found in re.findall(_NUMBER, text) if (number := _clean_number(found)) is not None}


def _cut_at_stops(text: str, stops: Sequence[str]) -> str:
    cut = min((text.index(stop) for stop in stops if stop and stop in text), default=len(text))
    return text[:cut]


LABELLERS: dict[str, Callable[[Question, str, str], Choice | None]] = {"choice": label_choice, "number": label_number}


# -- collection ------------------------------------------------------------------------------------


class _QuestionCursor:
    """A shared cursor seen from one question: every text it is asked at is the question's own text
    (``head``) followed by the response. See the module docstring."""

    def __init__(self, shared: Cursor, head: str) -> None:
        self._shared = shared
        self._head = head

    @property
    def tokens_read(self) -> int:
        return self._shared.tokens_read

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        return self._shared.next_word(self._head + text, max_tokens, with_confidence=with_confidence)

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        return self._shared.generate(self._head + text, max_tokens, stop)

    def label_logprobs(self, text: str, labels: Sequence[str]) -> list[float]:
        return self._shared.label_logprobs(self._head + text, labels)

    def score_continuation(self, text: str, continuation: str) -> ContinuationScore:
        return self._shared.score_continuation(self._head + text, continuation)

    def hidden_state(self, text: str) -> list[float]:
        return self._shared.hidden_state(self._head + text)

    def close(self) -> None:
        """The shared cursor outlives the question; its owner closes it."""


class FirstWordPolicy:
    """Probe the answer's first word and nothing after it: on a multiple-choice answer that word is the
    letter, the only place a divergence can change the answer (later ones, after the letter, differ in
    what follows the stop string and would all be dropped)."""

    name = "first-word"
    needs_confidence = False

    def words_until_probe(self, config: CollabConfig, gap_index: int) -> int:
        return 0 if gap_index == 0 else NO_MORE_PROBES

    def probe_word(self, word: Piece, config: CollabConfig) -> bool:
        return False


def collection_policy(question: Question, config: CollabConfig) -> ProbePolicy:
    """Where to probe while collecting: the letter of a multiple-choice answer, else ``config``'s policy."""
    return FirstWordPolicy() if question.kind == "choice" else get_probe_policy(config.probe_policy)


class _Recorder:
    """The collection's verifier: records the inputs and the baseline's score, then adopts the mentor."""

    name = "always-mentor"

    def __init__(self, groups: Sequence[str]) -> None:
        self.groups = tuple(groups)
        self.seen: list[tuple[VerifyRequest, list[float], float]] = []
        self._baseline = SelfConsultVerifier(both_orders=True)

    def decide(self, request: VerifyRequest) -> Verdict:
        features = divergence_features(request, self.groups)
        baseline = self._baseline.decide(request).score
        assert baseline is not None
        self.seen.append((request, features, baseline))
        return Verdict("mentor", 1.0)


def shared_prefix(prompts: Sequence[str]) -> str:
    """The few-shot examples every prompt starts with, cut after the last blank line they share."""
    common = os.path.commonprefix(list(prompts)) if len(prompts) > 1 else ""  # noqa: RUF071 - prompts, not paths
    cut = common.rfind("\n\n")
    return common[: cut + 2] if cut >= 0 else ""


def collect(
    batches: Sequence[Sequence[Question]],
    generator: Backend,
    mentor: Backend,
    config: CollabConfig,
    groups: Sequence[str],
    deadline: float | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[list[DivergenceRecord], dict[str, int]]:
    """Run the method over each batch's questions (one benchmark split per batch, few-shot prompts),
    adopting at every divergence, and return every divergence, labelled, and the questions run per split.

    Questions are taken in turn from each batch, so a ``deadline`` (``time.monotonic()``) that ends the
    collection early still leaves every source represented.
    """
    records: list[DivergenceRecord] = []
    asked: dict[str, int] = {}
    with ExitStack() as cursors:
        lanes = []
        for batch in batches:
            prompts = [build_prompt(question, "fewshot") for question in batch]
            prefix = shared_prefix([str(built.prompt) for built in prompts])
            shared = (cursors.enter_context(closing(generator.open(prefix, "raw"))),
                      cursors.enter_context(closing(mentor.open(prefix, "raw"))))
            lanes.append((batch, prompts, prefix, shared))
        for index in range(max((len(batch) for batch in batches), default=0)):
            for batch, prompts, prefix, (generator_cursor, mentor_cursor) in lanes:
                if index >= len(batch):
                    continue
                if deadline is not None and time.monotonic() > deadline:
                    log("time budget spent: collection ends here")
                    return records, asked
                question, built = batch[index], prompts[index]
                head = str(built.prompt)[len(prefix):]
                found = _collect_question(question, built.stop, _QuestionCursor(generator_cursor, head),
                                          _QuestionCursor(mentor_cursor, head), config, groups)
                records += found
                key = f"{question.benchmark}:{question.split}"
                asked[key] = asked.get(key, 0) + 1
                log(f"{key} {asked[key]}/{len(batch)}: {len(found)} divergences, {len(records)} in all")
    return records, asked


def _collect_question(question: Question, stop: tuple[str, ...], generator: Cursor, mentor: Cursor,
                      config: CollabConfig, groups: Sequence[str]) -> list[DivergenceRecord]:
    """One question through the engine's steps, with the recorder as its verifier."""
    settings = config.model_copy(update={
        "prompt_style": "raw",
        "stop": stop,
        "seed": question_seed(config.seed, question.id),
        "max_new_tokens": MAX_NEW_TOKENS.get(question.kind, config.max_new_tokens),
    })
    recorder = _Recorder(groups)
    team = Team(generator=generator, mentor=mentor, verifier=recorder, config=settings,
                policy=collection_policy(question, settings))
    for _ in run_steps(CollabState(), team):
        pass
    labeller = LABELLERS[question.kind]
    return [
        DivergenceRecord(
            benchmark=question.benchmark,
            split=question.split,
            question_id=question.id,
            position=len(request.text),
            generator_segment=request.generator_segment,
            mentor_segment=request.mentor_segment,
            features=features,
            self_consult_both_orders=baseline,
            label=labeller(question, request.generator_segment, request.mentor_segment),
        )
        for request, features, baseline in recorder.seen
    ]


# -- training --------------------------------------------------------------------------------------


@dataclass
class TrainSettings:
    hidden_units: int = 32
    epochs: int = 300
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    dropout: float = 0.2
    validation_fraction: float = 0.3
    seed: int = 0


@dataclass
class Scores:
    """How well a score separates the labels on a set of divergences (label 1 = adopt the mentor)."""

    n: int
    accuracy: float
    balanced_accuracy: float
    auc: float | None
    threshold: float

    @classmethod
    def of(cls, scores: Sequence[float], labels: Sequence[int], threshold: float) -> Scores:
        decisions = [int(score > threshold) for score in scores]
        right = [int(decision == label) for decision, label in zip(decisions, labels, strict=True)]
        per_class = [
            sum(r for r, label in zip(right, labels, strict=True) if label == value) / count
            for value in (0, 1)
            if (count := sum(1 for label in labels if label == value))
        ]
        return cls(len(labels), sum(right) / max(1, len(labels)), sum(per_class) / max(1, len(per_class)),
                   auc(scores, labels), threshold)


def auc(scores: Sequence[float], labels: Sequence[int]) -> float | None:
    """The probability that a random mentor-labelled divergence scores above a generator-labelled one
    (ties count half); None when one class is missing."""
    positives = [score for score, label in zip(scores, labels, strict=True) if label == 1]
    negatives = [score for score, label in zip(scores, labels, strict=True) if label == 0]
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def split_by_question(records: Sequence[DivergenceRecord], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of (train, validation): whole questions go to one side, about ``fraction`` of each label's
    questions to validation, chosen by a seeded hash so the split is reproducible."""
    def rank(record: DivergenceRecord) -> str:
        return hashlib.sha256(f"{seed}:{record.benchmark}:{record.split}:{record.question_id}".encode()).hexdigest()

    questions: dict[tuple[str, str, str], list[int]] = {}
    for index, record in enumerate(records):
        questions.setdefault((record.benchmark, record.split, record.question_id), []).append(index)
    validation: set[int] = set()
    for label in ("mentor", "generator"):
        keys = sorted((key for key, members in questions.items() if records[members[0]].label == label),
                      key=lambda key: rank(records[questions[key][0]]))
        for key in keys[: round(len(keys) * fraction)]:
            validation.update(questions[key])
    train = [index for index in range(len(records)) if index not in validation]
    return train, sorted(validation)


def best_threshold(scores: Sequence[float], labels: Sequence[int]) -> float:
    """The threshold with the highest accuracy on these scores (the one nearest 0.5 among ties)."""
    candidates = sorted({0.5, *((a + b) / 2 for a, b in itertools.pairwise(sorted(scores)))})
    return max(candidates, key=lambda threshold: (Scores.of(scores, labels, threshold).accuracy, -abs(threshold - 0.5)))


def train(records: Sequence[DivergenceRecord], groups: Sequence[str], hidden_size: int, settings: TrainSettings
          ) -> tuple[torch.nn.Sequential, torch.Tensor, torch.Tensor, float, dict[str, Any]]:
    """Train on the labelled records' training side; pick the threshold and measure on the validation side.

    Returns the network, the input mean and std, the threshold and the figures for the card.
    """
    labelled = [record for record in records if record.label is not None]
    if len({record.label for record in labelled}) < 2:
        raise ConfigError(f"need divergences of both labels to train; got {len(labelled)} labelled, all one label")
    train_rows, validation_rows = split_by_question(labelled, settings.validation_fraction, settings.seed)
    features = torch.tensor([record.features for record in labelled], dtype=torch.float32)
    labels = torch.tensor([float(record.label == "mentor") for record in labelled])
    train_x, train_y = features[train_rows], labels[train_rows]
    mean = train_x.mean(0)
    std = train_x.std(0).clamp_min(1e-4)
    torch.manual_seed(settings.seed)
    network = build_network(features.shape[1], settings.hidden_units, settings.dropout)
    positives = float(train_y.sum())
    negatives_per_positive = (len(train_y) - positives) / max(positives, 1.0)
    loss_function = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(negatives_per_positive))
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    network.train()
    for _ in range(settings.epochs):
        optimiser.zero_grad()
        loss = loss_function(network((train_x - mean) / std)[:, 0], train_y)
        loss.backward()
        optimiser.step()
    network.eval()
    with torch.inference_mode():
        probabilities = torch.sigmoid(network((features - mean) / std)[:, 0]).tolist()

    def side(rows: list[int]) -> tuple[list[float], list[int], list[DivergenceRecord]]:
        return [probabilities[row] for row in rows], [int(labels[row]) for row in rows], [labelled[row] for row in rows]

    validation_scores, validation_labels, validation_records = side(validation_rows)
    train_scores, train_labels, _ = side(train_rows)
    threshold = best_threshold(validation_scores, validation_labels) if validation_rows else 0.5
    names = feature_names(groups, hidden_size)
    one_order = [_sigmoid(record.features[names.index("label_margin")]) for record in validation_records] \
        if "label_margin" in names else None
    figures: dict[str, Any] = {
        "train_examples": len(train_rows),
        "train_mentor_labels": int(sum(train_labels)),
        "validation_examples": len(validation_rows),
        "validation_mentor_labels": int(sum(validation_labels)),
        "train": asdict(Scores.of(train_scores, train_labels, threshold)),
        "validation": {
            "mlp (threshold chosen on validation: optimistic)": asdict(
                Scores.of(validation_scores, validation_labels, threshold)
            ),
            "mlp at 0.5": asdict(Scores.of(validation_scores, validation_labels, 0.5)),
            "always-mentor": asdict(Scores.of([1.0] * len(validation_labels), validation_labels, 0.5)),
            "self-consult-both-orders": asdict(Scores.of(
                [record.self_consult_both_orders for record in validation_records], validation_labels, 0.5)),
        },
    }
    if one_order is not None:
        figures["validation"]["self-consult (one order)"] = asdict(Scores.of(one_order, validation_labels, 0.5))
    return network, mean, std, threshold, figures


def _sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


# -- files -----------------------------------------------------------------------------------------


def write_records(records: Sequence[DivergenceRecord], path: Path) -> None:
    """The collected divergences as JSON lines (retrain with ``--from-data`` without collecting again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as sink:
        for record in records:
            sink.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")


def read_records(path: Path) -> list[DivergenceRecord]:
    with path.open(encoding="utf-8") as lines:
        return [DivergenceRecord(**json.loads(line)) for line in lines if line.strip()]


def label_counts(records: Sequence[DivergenceRecord]) -> dict[str, int]:
    """Divergences by label: ``mentor``, ``generator`` and ``dropped`` (neither or both lead to the gold)."""
    counts = {"divergences": len(records), "mentor": 0, "generator": 0, "dropped": 0}
    for record in records:
        counts[record.label or "dropped"] += 1
    return counts


def _counts_by_split(records: Sequence[DivergenceRecord], questions: dict[str, int]) -> dict[str, dict[str, int]]:
    """Label counts per benchmark split, with the number of questions run where the collection knows it."""
    groups: dict[str, list[DivergenceRecord]] = {}
    for record in records:
        groups.setdefault(f"{record.benchmark}:{record.split}", []).append(record)
    return {key: ({"questions": questions[key]} if key in questions else {}) | label_counts(group)
            for key, group in groups.items()}


@dataclass
class TrainingRun:
    """Everything the card says about how a verifier was made."""

    generator: str
    mentor: str
    dtype: str
    sources: list[TrainingSource]
    config: CollabConfig
    groups: tuple[str, ...]
    settings: TrainSettings
    command: str
    questions: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def build_verifier(records: Sequence[DivergenceRecord], run: TrainingRun) -> MLPVerifier:
    """Train on ``records`` and wrap the result with its card."""
    hidden_size = len(records[0].features) - (len(feature_names(run.groups, 0)))
    network, mean, std, threshold, figures = train(records, run.groups, hidden_size, run.settings)
    card = {
        "format": CARD_FORMAT,
        "generator": {"name": run.generator, "sha256": weights_sha256(run.generator), "dtype": run.dtype},
        "mentor": run.mentor,
        "features": list(run.groups),
        "hidden_size": hidden_size,
        "input_size": int(mean.numel()),
        "hidden_units": run.settings.hidden_units,
        "threshold": threshold,
        "training_data": {
            "sources": [str(source) for source in run.sources],
            "source_format": "benchmark:split:offset:limit in the fixed shuffled order of evals.data",
            "prompt": "fewshot",
            "collection": {
                "probe_policy": {"choice": FirstWordPolicy.name, "number": run.config.probe_policy},
                "probe_rate": run.config.probe_rate,
                "uncertainty": f"{run.config.uncertainty_signal} < {run.config.uncertainty_threshold}",
                "segment_tokens": run.config.segment_tokens,
                "max_new_tokens": MAX_NEW_TOKENS,
                "verifier_while_collecting": "always-mentor",
            },
            "labels": {
                "choice": "the segment naming the gold letter wins; neither or both: dropped",
                "number": "the segment whose numbers all appear in the problem or its reference solution wins "
                          "against one writing a foreign number; otherwise dropped",
            },
            "counts": _counts_by_split(records, run.questions),
            "totals": label_counts(records),
            "disjoint_from_evaluation": f"first {EVALUATION_LIMIT} of each default split never used",
        },
        "training": asdict(run.settings) | {k: v for k, v in figures.items() if k != "validation"},
        "validation": figures["validation"],
        "command": run.command,
        "collection_minutes": round(run.seconds / 60, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return MLPVerifier(network, mean, std, card)
