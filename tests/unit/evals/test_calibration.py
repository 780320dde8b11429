"""Calibration picks the threshold at which the uncertain policy, as the engine runs it, probes the asked share.

The threshold is checked against the policy itself: a collaboration with the calibrated threshold must probe
exactly the share of words the calibration said it would.
"""

from __future__ import annotations

import json

import pytest

from mentorcollab_langchain.backends import ScriptedBackend
from mentorcollab_langchain.engine import CollabConfig, CollabState, collaborate
from mentorcollab_langchain.errors import ConfigError
from mentorcollab_langchain.evals.calibration import (
    calibrate,
    calibrate_on_prompts,
    calibrate_on_questions,
    threshold_for_share,
)
from mentorcollab_langchain.evals.data import Question
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.evals.runner import question_config

ANSWER = " one two three four five six seven eight"
# The scripted top-1 probability of each word; its top share is 2p / (1 + p), in the same order.
CONFIDENCE = (0.9, 0.2, 0.8, 0.3, 0.7, 0.4, 0.6, 0.5)


def question(number: int) -> Question:
    return Question(benchmark="arc_challenge", split="validation", id=f"q{number}", question="?", gold="A",
                    kind="choice", choices=("a", "b"), fewshot=f"Question {number}?\nAnswer:")


@pytest.mark.parametrize(
    ("values", "share", "signal", "probed"),
    [
        ([0.51, 0.53, 0.52, 0.54], 0.5, "top_share", {0.51, 0.52}),
        ([0.51, 0.53, 0.52, 0.54], 0.0, "top_share", set()),
        ([0.51, 0.53, 0.52, 0.54], 1.0, "top_share", {0.51, 0.52, 0.53, 0.54}),
        ([1.0, 3.0, 2.0, 4.0], 0.25, "entropy", {4.0}),  # entropy is probed above its threshold
        ([1.0, 3.0, 2.0, 4.0], 1.0, "entropy", {1.0, 2.0, 3.0, 4.0}),
    ],
)
def test_the_threshold_probes_the_share_of_values(values: list[float], share: float, signal: str,
                                                  probed: set[float]) -> None:
    threshold = threshold_for_share(values, share, signal)
    below = {value for value in values if (value > threshold if signal == "entropy" else value < threshold)}
    assert below == probed


def test_no_values_is_an_error_not_a_threshold() -> None:
    with pytest.raises(ConfigError, match="no word to calibrate on"):
        threshold_for_share([], 0.5, "top_share")


def probes_at(threshold: float, number: int) -> int:
    """How many words the engine's uncertain policy probes on the scripted answer at ``threshold``."""
    backend = ScriptedBackend(ANSWER, confidence=CONFIDENCE)
    built = build_prompt(question(number), "fewshot")
    config = question_config(CollabConfig(uncertainty_threshold=threshold, probe_rate=0.0), question(number),
                             built)
    state = CollabState()
    for _ in collaborate(built.prompt, backend, backend, config=config, state=state):
        pass
    return state.stats.probes


@pytest.mark.parametrize("share", [0.25, 0.5, 0.75])
def test_the_policy_at_the_calibrated_threshold_probes_the_asked_share(share: float) -> None:
    backend = ScriptedBackend(ANSWER, confidence=CONFIDENCE)
    found = calibrate_on_questions([question(1), question(2)], backend, CollabConfig(probe_rate=0.0), "fewshot",
                                   share, log=lambda line: None)
    assert found.words == 16 and found.answers == 2
    assert found.word_share == share and found.answer_share == 1.0
    assert probes_at(found.uncertainty_threshold, 1) == share * len(CONFIDENCE)


def test_random_probes_count_toward_the_share() -> None:
    """At probe rate 0.2 a share of 0.6 leaves (0.6 - 0.2) / 0.8 = half the words to uncertainty."""
    values = [[0.9, 0.2, 0.8, 0.3], [0.7, 0.4, 0.6, 0.5]]
    with_floor = calibrate(values, CollabConfig(probe_rate=0.2), 0.6)
    without = calibrate(values, CollabConfig(probe_rate=0.0), 0.5)
    assert with_floor.uncertainty_threshold == without.uncertainty_threshold == 0.55
    assert with_floor.answer_share == 1.0 and calibrate(values, CollabConfig(probe_rate=0.0), 0.25).answer_share == 0.5
    assert with_floor.word_share == 0.5 and with_floor.probe_rate == 0.2


@pytest.mark.parametrize("share", [0.01, 1.5])
def test_a_share_outside_the_random_rate_and_one_is_refused(share: float) -> None:
    backend = ScriptedBackend(ANSWER)
    with pytest.raises(ConfigError, match=f"probe share {share} must lie between the random probe rate"):
        calibrate_on_questions([question(1)], backend, CollabConfig(probe_rate=0.02), "fewshot", share)
    assert backend.prompts == [], "refused before the generator ran"


def test_own_prompts_calibrate_like_benchmark_questions() -> None:
    backend = ScriptedBackend(ANSWER, confidence=CONFIDENCE)
    found = calibrate_on_prompts(["one prompt", [{"role": "user", "content": "another"}]], backend,
                                 CollabConfig(probe_rate=0.0), 0.25, log=lambda line: None)
    assert (found.words, found.answers, found.word_share) == (16, 2, 0.25)
    own = [{"role": "user", "content": "another"}]
    assert backend.prompts == ["one prompt", "one prompt", own, own]  # the generator also stands in for the mentor
    assert probes_at(found.uncertainty_threshold, 1) == 2
    with pytest.raises(ConfigError, match="nothing to calibrate on"):
        calibrate_on_prompts([], backend, CollabConfig(), 0.5)


def test_a_calibration_record_configures_the_chat_model(tmp_path) -> None:
    """``read_calibration`` gives keywords ``ChatMentorCollab`` takes as they are (no model loads here)."""
    from mentorcollab_langchain import ChatMentorCollab
    from mentorcollab_langchain.evals import read_calibration

    record = tmp_path / "calibration.json"
    record.write_text(json.dumps({"uncertainty_signal": "top_share", "uncertainty_threshold": 0.529,
                                  "probe_rate": 0.02, "generator": "smollm2-135m-instruct", "words": 300}))
    model = ChatMentorCollab(generator="smollm2-135m-instruct", **read_calibration(record, "smollm2-135m-instruct"))
    assert model.collab_config().uncertainty_threshold == 0.529
    with pytest.raises(ConfigError, match="made for the generator 'smollm2-135m-instruct', not 'gemma3-270m'"):
        read_calibration(record, "gemma3-270m")


def test_a_calibration_record_names_its_generator_by_its_weights(tmp_path) -> None:
    """The same weights at another path are the same generator; other weights under the record's name are not."""
    from mentorcollab_langchain.evals import read_calibration
    from mentorcollab_langchain.models.identity import weights_sha256

    first, second = tmp_path / "model", tmp_path / "copy"
    for folder, weights in ((first, b"one"), (second, b"one")):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(weights)
    record = tmp_path / "calibration.json"
    record.write_text(json.dumps({"uncertainty_signal": "top_share", "uncertainty_threshold": 0.5, "probe_rate": 0.02,
                                  "generator": str(first), "generator_sha256": weights_sha256(str(first))}))
    assert read_calibration(record, str(second))["uncertainty_threshold"] == 0.5
    (first / "model.safetensors").write_bytes(b"two")  # retrained in place: the name stays, the weights change
    with pytest.raises(ConfigError, match="weights sha256"):
        read_calibration(record, str(first))
    with pytest.raises(ConfigError, match="cannot check it against the generator"):
        read_calibration(record, str(tmp_path / "nowhere"))
