"""The trained ``mlp`` verifier: it trains, saves as safetensors + JSON, loads without unpickling, decides,
refuses a generator it was not trained for, and its training data never touches the evaluation sample."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.base import Piece
from mentorcollab_langchain.cli import build_parser
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.errors import ConfigError, VerifierMismatchError
from mentorcollab_langchain.evals.data import BENCHMARKS, DEFAULT_SPLITS, Question, load_questions
from mentorcollab_langchain.evals.verifier_training import (
    COLLECTION_SETTINGS,
    DEFAULT_SOURCES,
    EVALUATION_LIMIT,
    DivergenceRecord,
    TrainingRun,
    TrainingSource,
    TrainSettings,
    auc,
    build_verifier,
    collect,
    label_choice,
    label_number,
)
from mentorcollab_langchain.models import DEFAULT_GENERATOR
from mentorcollab_langchain.verifiers import MLPVerifier, VerifyRequest, get_verifier
from mentorcollab_langchain.verifiers.mlp import FEATURE_GROUPS, divergence_features, shipped_verifier_path

CONTEXT = "Question: Which gas do plants take in?\n A. oxygen\n B. carbon dioxide\nAnswer:"
RIGHT, WRONG = [" B", " B. carbon dioxide", " B\n", " B because"], [" A", " A. oxygen", " A\n", " A because"]


def request_for(backend: TransformersBackend, generator_segment: str, mentor_segment: str) -> VerifyRequest:
    return VerifyRequest(CONTEXT, generator_segment, mentor_segment, backend.open(CONTEXT, "raw"))


@pytest.fixture(scope="module")
def generator(tiny_byte_level_model: str) -> TransformersBackend:
    return TransformersBackend(tiny_byte_level_model, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def trained(generator: TransformersBackend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verifier trained on real features of a tiny generator, labelled by whether the mentor's segment
    names the right option (so there is something to learn from the text the generator read)."""
    records = []
    for index, (right, wrong) in enumerate((r, w) for r in RIGHT for w in WRONG):
        for mentor_right in (True, False):
            generator_segment, mentor_segment = (wrong, right) if mentor_right else (right, wrong)
            request = request_for(generator, generator_segment, mentor_segment)
            records.append(DivergenceRecord(
                "tiny", "train", f"{index}-{mentor_right}", 0, generator_segment, mentor_segment,
                divergence_features(request, FEATURE_GROUPS), 0.5, "mentor" if mentor_right else "generator",
            ))
    run = TrainingRun(
        generator=generator.model_name, mentor="tiny-mentor", dtype="float32", sources=[], config=CollabConfig(),
        groups=FEATURE_GROUPS, settings=TrainSettings(epochs=200, validation_fraction=0.25), command="pytest",
    )
    verifier = build_verifier(records, run)
    return verifier.save(tmp_path_factory.mktemp("verifier") / "tiny").weights


def test_a_trained_verifier_saves_loads_and_decides(trained: Path, generator: TransformersBackend) -> None:
    verifier = MLPVerifier.load(trained, generator)
    card = json.loads(trained.with_suffix(".json").read_text())
    assert card["generator"]["name"] == generator.model_name and len(card["generator"]["sha256"]) == 64
    assert card["features"] == list(FEATURE_GROUPS) and card["hidden_size"] == 64
    assert card["training"]["train_examples"] + card["training"]["validation_examples"] == 32
    assert set(card["validation"]) >= {"always-mentor", "self-consult-both-orders"}

    pairs = list(zip(RIGHT, WRONG, strict=True))
    verdicts = [verifier.decide(request_for(generator, wrong, right)) for right, wrong in pairs]
    for verdict in verdicts:
        assert 0.0 <= verdict.score <= 1.0
        assert verdict.choice == ("mentor" if verdict.score > verifier.threshold else "generator")
        named = {"logit", "threshold", "feature:hidden", "feature:confidence", "label_margin", "entropy"}
        assert named <= set(verdict.evidence)
        sigmoid_of_logit = 1 / (1 + torch.exp(torch.tensor(-verdict.evidence["logit"])).item())
        assert verdict.score == pytest.approx(sigmoid_of_logit, rel=1e-5)
    # It learned something from the training set: it prefers the mentor when the mentor names option B.
    swapped = [verifier.decide(request_for(generator, right, wrong)).score for right, wrong in pairs]
    assert sum(v.score for v in verdicts) > sum(swapped)


def test_loading_refuses_another_generator(trained: Path, tiny_sentencepiece_model: str) -> None:
    with pytest.raises(VerifierMismatchError, match="trained for the generator"):
        MLPVerifier.load(trained, TransformersBackend(tiny_sentencepiece_model, device="cpu"))
    with pytest.raises(VerifierMismatchError):
        MLPVerifier.load(trained, "gemma3-270m")  # a packaged model is named by its pinned sha256
    with pytest.raises(VerifierMismatchError):
        get_verifier(f"mlp:{trained}", generator=DEFAULT_GENERATOR)


def test_verifier_files_are_safetensors_and_json_and_loading_never_unpickles(
    trained: Path, generator: TransformersBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert sorted(path.suffix for path in trained.parent.iterdir()) == [".json", ".safetensors"]
    with safe_open(str(trained), framework="pt") as tensors:
        assert {"input_mean", "input_std"} <= set(tensors.keys())
    json.loads(trained.with_suffix(".json").read_text())

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading a verifier unpickled something")

    for module, name in ((pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(module, name, refuse)
    verifier = get_verifier(f"mlp:{trained}", generator=generator)
    assert verifier.decide(request_for(generator, WRONG[0], RIGHT[0])).choice in ("mentor", "generator")


def test_the_shipped_verifier_loads_for_the_default_generator_only() -> None:
    path = shipped_verifier_path(DEFAULT_GENERATOR)
    assert path.stat().st_size + path.with_suffix(".json").stat().st_size < 1_000_000
    verifier = get_verifier("mlp", generator=DEFAULT_GENERATOR)
    assert isinstance(verifier, MLPVerifier) and verifier.name == "mlp"
    assert verifier.card["generator"]["name"] == DEFAULT_GENERATOR
    assert verifier.card["hidden_size"] == 576  # SmolLM2-135M's hidden size
    assert 0.0 < verifier.threshold < 1.0
    with pytest.raises(ConfigError, match="no mlp verifier ships for the generator 'gemma3-270m'"):
        get_verifier("mlp", generator="gemma3-270m")


class LetterMentor:
    """A mentor that answers option B to every question and then starts a new one. A test double: the
    verifier's features come from the real (tiny) generator; the mentor only has to diverge from it."""

    model_name = "letter-mentor"
    tokens_read = 0

    def open(self, prompt: object, style: str = "chat", sampling: object = None) -> LetterMentor:
        return self

    def next_word(self, text: str, max_tokens: int, with_confidence: bool = False) -> Piece:
        return Piece(" B" if text.endswith("Answer:") else "\n", 1)

    def generate(self, text: str, max_tokens: int, stop: tuple[str, ...] = ()) -> Piece:
        return Piece("\n\nQuestion:", max_tokens)

    def close(self) -> None:
        pass


def test_collection_runs_the_engine_and_labels_by_the_gold_letter(tiny_byte_level_model: str) -> None:
    questions = [
        Question("tiny", "train", str(index), "Which gas?", gold, "choice", ("oxygen", "carbon dioxide"),
                 fewshot="Question: 1+1?\n A. 2\n B. 3\nAnswer: A\n\n" + CONTEXT, stop=("\n",))
        for index, gold in enumerate("ABAB")
    ]
    records, asked = collect(
        [questions], TransformersBackend(tiny_byte_level_model, device="cpu"), LetterMentor(),  # type: ignore[arg-type]
        CollabConfig(segment_tokens=4), FEATURE_GROUPS,
    )
    assert asked == {"tiny:train": 4}
    assert [record.question_id for record in records] == ["0", "1", "2", "3"]  # one divergence, at the letter
    assert [record.label for record in records] == [None, "mentor", None, "mentor"]
    for record in records:
        assert record.mentor_segment.startswith(" B\n") and not record.generator_segment.startswith(" B")
        assert len(record.features) == 64 + 4 and 0.0 <= record.self_consult_both_orders <= 1.0


def test_multiple_choice_labels_are_exact() -> None:
    question = Question("arc", "validation", "1", "q", "B", "choice", ("x", "y", "z"), stop=("\n",))
    # text past the stop is not the answer
    assert label_choice(question, " A\n\nQuestion: B", " B\n\nQuestion") == "mentor"
    assert label_choice(question, " B", " C") == "generator"
    assert label_choice(question, " A", " C") is None and label_choice(question, " B", " B.") is None


def test_gsm8k_labels_follow_the_reference_solution() -> None:
    question = Question("gsm8k", "test", "1", "Natalia sold 48 clips in April and half as many in May.", "72",
                        "number", stop=("Question:",), reference="48/2 = <<48/2=24>>24 clips in May.\n#### 72")
    assert label_number(question, " she sold 96 clips", " she sold 24 clips") == "mentor"
    assert label_number(question, " 48 + 24 = 72", " 48 + 12 = 60") == "generator"
    assert label_number(question, " she sold", " 48 + 12") is None  # a segment without numbers says nothing
    assert label_number(question, " 13", " 14") is None  # both wrong: a tie


def test_auc_counts_ties_half() -> None:
    assert auc([0.9, 0.1], [1, 0]) == 1.0 and auc([0.5, 0.5], [1, 0]) == 0.5 and auc([0.5], [1]) is None


# -- the training data never touches the evaluation sample ----------------------------------------


def evaluation_sample() -> tuple[set[tuple[str, str, str]], set[str]]:
    """Ids and question texts of what the evaluation takes: ``--limit 100`` from offset 0 of each
    benchmark's default split, in the fixed shuffled order."""
    ids, texts = set(), set()
    for benchmark in BENCHMARKS:
        for question in load_questions(benchmark, DEFAULT_SPLITS[benchmark], limit=EVALUATION_LIMIT):
            ids.add((question.benchmark, question.split, question.id))
            texts.add(question.question.strip())
    return ids, texts


def test_training_questions_never_overlap_the_evaluation_samples() -> None:
    evaluated_ids, evaluated_texts = evaluation_sample()
    shipped = json.loads(shipped_verifier_path(DEFAULT_GENERATOR).with_suffix(".json").read_text())
    specs = set(DEFAULT_SOURCES) | set(shipped["training_data"]["sources"])
    for spec in specs:
        source = TrainingSource.parse(spec)
        questions = load_questions(source.benchmark, source.split, limit=source.limit, offset=source.offset)
        assert questions, spec
        assert not {(q.benchmark, q.split, q.id) for q in questions} & evaluated_ids, spec
        assert not {q.question.strip() for q in questions} & evaluated_texts, spec


@pytest.mark.parametrize("spec", ["csqa:validation:0:100", "csqa:validation:150:10", "gsm8k:test:500:10",
                                  "arc_challenge:test:0:10", "openbookqa:test:0:5"])
def test_sources_inside_the_evaluation_range_are_refused(spec: str) -> None:
    with pytest.raises(ConfigError, match="the evaluation samples"):
        TrainingSource.parse(spec)


def test_the_train_verifier_command_parses() -> None:
    args = build_parser().parse_args(["train-verifier", "--out", "v", "--source", "arc_easy:validation:0:10",
                                      "--probe-rate", "0.5"])
    assert args.command == "train-verifier" and args.source == ["arc_easy:validation:0:10"] and args.probe_rate == 0.5
    assert COLLECTION_SETTINGS["probe_rate"] == 1.0  # what collection uses when --probe-rate is left out
