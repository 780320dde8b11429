"""Evals on the real packaged models (slow): a couple of real benchmark questions end to end."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import pytest

from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.evals.data import MissingBenchmarkData, data_root, load_questions
from mentorcollab_langchain.evals.report import build_report
from mentorcollab_langchain.evals.runner import EvalRun, ModelInfo, ModelPair, make_methods, read_results

pytestmark = pytest.mark.slow


def _skip_without_data() -> None:
    try:
        data_root()
    except MissingBenchmarkData as error:
        pytest.skip(str(error))


def test_generator_alone_on_real_arc_questions_then_report(tmp_path: Path) -> None:
    from mentorcollab_langchain.backends import TransformersBackend

    _skip_without_data()
    generator = TransformersBackend("smollm2-135m-instruct")
    models = ModelPair(
        generator, generator, ModelInfo("smollm2-135m-instruct", "transformers"), ModelInfo("-", "not loaded")
    )
    questions = load_questions("arc_challenge", "test", limit=2)
    methods = make_methods(["generator"], CollabConfig(max_new_tokens=4), "fewshot")
    evaluation = EvalRun(tmp_path / "results.jsonl", models, show_progress=False, log=lambda line: None)
    records = evaluation.run(questions, methods)
    # What greedy SmolLM2 answered to these two questions when recorded before, on transformers
    # (tests/unit/evals/fixtures/evals/real_outputs.jsonl) and on llama.cpp (docs/results/data): " C" to both.
    recorded = {"Mercury_SC_415406": " C", "Mercury_177870": " C"}
    assert [record["question_id"] for record in records] == list(recorded)
    for record in records:
        # the 5-shot format gives a bare letter, one token, cut at the stop string "\n"
        assert record["response"] == recorded[record["question_id"]] and record["finish_reason"] == "stop"
        assert record["parsed"] and record["predicted"] == "C"
        assert record["correct"] is (record["gold"] == "C")
        assert record["stats"]["tokens_committed"] == 1 and record["stats"]["mentor_tokens_generated"] == 0
    assert len(read_results(tmp_path)) == 2
    report, _ = build_report(tmp_path)
    assert "| generator | 2 |" in report.read_text()


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python[server] not installed")
def test_collaboration_with_a_llama_cpp_mentor_on_a_real_question() -> None:
    from mentorcollab_langchain.backends import TransformersBackend
    from mentorcollab_langchain.backends.openai_compatible import OpenAICompatibleBackend
    from mentorcollab_langchain.serving import llama_server

    _skip_without_data()
    generator = TransformersBackend("smollm2-135m-instruct")
    question = load_questions("arc_challenge", "test", limit=1)
    with (
        tempfile.TemporaryDirectory() as folder,
        llama_server("qwen2.5-coder-1.5b-instruct", Path(folder) / "log") as server,
    ):
        mentor = OpenAICompatibleBackend(
            server.url, model="mentor", tokenizer="qwen2.5-coder-1.5b-instruct", timeout=300
        )
        models = ModelPair(generator, mentor, ModelInfo("smollm2-135m-instruct", "transformers"),
                          ModelInfo("qwen2.5-coder-1.5b-instruct", "llama.cpp"))
        config = CollabConfig(max_new_tokens=4, probe_rate=1.0, segment_tokens=2)
        methods = make_methods(["mentorcollab", "mentor"], config, "fewshot", verifier="self-consult")
        evaluation = EvalRun(Path(folder) / "r.jsonl", models, show_progress=False, log=lambda line: None)
        collab, alone = evaluation.run(question, methods)
    assert collab["error"] is None and alone["error"] is None
    assert collab["stats"]["probes"] >= 1 and collab["stats"]["mentor_tokens_generated"] >= 1
    assert alone["stats"]["mentor_share"] == 1.0 and alone["parsed"]


def test_calibrated_threshold_probes_the_share_it_promised_on_real_questions() -> None:
    """On the real generator, the uncertain policy at the calibrated threshold probes exactly the words the
    calibration counted: the generator stands in for the mentor, so every probe agrees and the text is the
    generator's own, word for word as calibration read it."""
    from mentorcollab_langchain.backends import LlamaCppBackend
    from mentorcollab_langchain.engine import CollabState, collaborate
    from mentorcollab_langchain.evals.calibration import calibrate_on_questions
    from mentorcollab_langchain.evals.prompts import build_prompt
    from mentorcollab_langchain.evals.runner import question_config

    _skip_without_data()
    generator = LlamaCppBackend("smollm2-135m-instruct", n_threads=1)
    questions = load_questions("arc_challenge", "validation", limit=6)
    config = CollabConfig(max_new_tokens=16, probe_rate=0.0)
    found = calibrate_on_questions(questions, generator, config, "fewshot", 0.5, log=lambda line: None)
    assert found.words >= len(questions) and found.word_share == pytest.approx(0.5, abs=0.5 / found.words)
    probed = CollabConfig(max_new_tokens=16, probe_rate=0.0, uncertainty_threshold=found.uncertainty_threshold)
    probes = 0
    for question in questions:
        built = build_prompt(question, "fewshot")
        state = CollabState()
        for _ in collaborate(built.prompt, generator, generator, config=question_config(probed, question, built),
                             state=state):
            pass
        probes += state.stats.probes
    assert probes == round(found.word_share * found.words)
