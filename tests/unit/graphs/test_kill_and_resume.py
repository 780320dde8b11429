"""A graph run whose process is killed at a random superstep resumes, in another process, to the same answer.

For each seed: the seed draws the settings and the superstep to die at; a child process runs the graph
with a SQLite checkpointer and sends itself SIGKILL right after that superstep (no cleanup, no flush,
as a crash or an OOM kill); this process then opens the same file with fresh models and resumes the
thread. The answer must be the uninterrupted run's, whatever step the kill hit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite import SqliteSaver

from graphs import build_mentorcollab_graph
from mentorcollab_langchain.backends import ScriptedBackend, TransformersBackend
from mentorcollab_langchain.backends.base import Backend
from mentorcollab_langchain.engine import CollabConfig
from tests.paths import REPO

pytestmark = pytest.mark.slow

GENERATOR_ANSWER = "The cat sat on the mat and then it slept all day long in the warm sun."
MENTOR_ANSWER = "The dog ran in the park and then it barked all night long at the cold moon."
PROMPT = [{"role": "user", "content": "Tell me a story."}]
THREAD = {"configurable": {"thread_id": "killed"}}

CHILD = """
import json, os, signal, sys
from langgraph.checkpoint.sqlite import SqliteSaver
from graphs import build_mentorcollab_graph
from mentorcollab_langchain.backends import ScriptedBackend, TransformersBackend
from mentorcollab_langchain.engine import CollabConfig

database, plan = sys.argv[1], json.loads(sys.argv[2])
if plan["models"] == "scripted":
    generator, mentor = ScriptedBackend(plan["answers"][0]), ScriptedBackend(plan["answers"][1])
else:
    generator, mentor = (TransformersBackend(path, device="cpu", dtype="float32") for path in plan["models"])
config = CollabConfig.model_validate(plan["config"])
with SqliteSaver.from_conn_string(database) as saver:
    graph = build_mentorcollab_graph(generator, mentor, verifier=plan["verifier"], config=config, checkpointer=saver)
    thread = {"configurable": {"thread_id": "killed"}}
    for step, _ in enumerate(graph.stream({"messages": plan["prompt"]}, thread, stream_mode="updates"), start=1):
        if step == plan["die_after"]:
            os.kill(os.getpid(), signal.SIGKILL)
print("finished without being killed")
"""


def plan_for(seed: int, models: str | list[str]) -> dict[str, Any]:
    draw = random.Random(seed)
    config = CollabConfig(
        probe_rate=draw.choice([0.2, 0.5, 1.0]),
        segment_tokens=draw.randint(1, 5),
        max_new_tokens=draw.randint(12, 40),
        seed=seed,
    )
    return {
        "models": models,
        "answers": [GENERATOR_ANSWER, MENTOR_ANSWER],
        "config": config.model_dump(mode="json"),
        "verifier": draw.choice(["always-mentor", "never-mentor", "mentor-margin"]),
        "prompt": PROMPT,
    }


def pair(plan: dict[str, Any]) -> tuple[Backend, Backend]:
    if plan["models"] == "scripted":
        return ScriptedBackend(GENERATOR_ANSWER), ScriptedBackend(MENTOR_ANSWER)
    generator, mentor = (TransformersBackend(path, device="cpu", dtype="float32") for path in plan["models"])
    return generator, mentor


def graph_for(plan: dict[str, Any], checkpointer: Any = None) -> Any:
    return build_mentorcollab_graph(
        *pair(plan), verifier=plan["verifier"], config=CollabConfig.model_validate(plan["config"]),
        checkpointer=checkpointer,
    )


def kill_and_resume(plan: dict[str, Any], seed: int, database: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The uninterrupted answer's record, the resumed one's, and the superstep the child died after."""
    uninterrupted = list(graph_for(plan).stream({"messages": PROMPT}, stream_mode="updates"))
    answer = next(update["finish"]["answer"] for update in uninterrupted if "finish" in update)
    plan["die_after"] = random.Random(seed).randint(1, len(uninterrupted) - 1)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(database), json.dumps(plan)],
        env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120, check=False,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr[-2000:]
    with SqliteSaver.from_conn_string(str(database)) as saver:
        graph = graph_for(plan, saver)
        saved = graph.get_state(THREAD)
        # Checkpoints are written as the run goes; one the kill cut off is simply not there to resume from.
        resumed = graph.invoke(None if saved.next else {"messages": PROMPT}, THREAD)["answer"]
    records = [message.response_metadata["mentorcollab"] for message in (answer, resumed)]
    return records[0] | {"text": answer.content}, records[1] | {"text": resumed.content}, plan["die_after"]


def essentials(record: dict[str, Any]) -> dict[str, Any]:
    """What a resume must keep: the text, who wrote each span, and each decision's words and choice."""
    return {
        "text": record["text"],
        "spans": record["spans"],
        "decisions": [(d["position"], d["generator_word"], d["mentor_word"], d["choice"]) for d in record["decisions"]],
        "finish_reason": record["finish_reason"],
    }


@pytest.mark.parametrize("seed", range(20))
def test_scripted_run_killed_at_a_random_superstep_resumes_to_the_same_answer(seed: int, tmp_path: Path) -> None:
    plan = plan_for(seed, "scripted")
    whole, resumed, died_after = kill_and_resume(plan, seed, tmp_path / "run.sqlite")
    assert essentials(resumed) == essentials(whole), f"killed after superstep {died_after}"


@pytest.mark.parametrize("seed", range(3))
def test_tiny_real_models_killed_at_a_random_superstep_resume_to_the_same_answer(
    seed: int, tmp_path: Path, tiny_byte_level_model: str, tiny_sentencepiece_model: str
) -> None:
    """Fresh cursors rebuild their caches from the checkpoint's text: the words and choices must not change."""
    plan = plan_for(seed, [tiny_byte_level_model, tiny_sentencepiece_model])
    whole, resumed, died_after = kill_and_resume(plan, seed, tmp_path / "run.sqlite")
    assert essentials(resumed) == essentials(whole), f"killed after superstep {died_after}"
