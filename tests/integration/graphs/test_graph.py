"""The LangGraph graph on real packaged models (slow: minutes on two CPU cores).

SmolLM2-135M-Instruct writes and Gemma-3-270M (a base model, another tokenizer) mentors, with a high
probe rate so that short answers still hold divergences and decisions.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from graphs import InvalidResumeError, build_mentorcollab_graph, decision_log, in_memory_tracing, node_spans
from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.backends.sampling import GREEDY
from mentorcollab_langchain.chat import ChatMentorCollab
from mentorcollab_langchain.engine import CollabConfig, run_collaboration
from mentorcollab_langchain.errors import BackendError
from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER
from tests.paths import REPO

pytestmark = pytest.mark.slow

GENERATOR, MENTOR = "smollm2-135m-instruct", "gemma3-270m"
QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether?"
)

PROMPT = [{"role": "user", "content": QUESTION}]
CONFIG = CollabConfig(probe_rate=0.4, segment_tokens=6, seed=7, max_new_tokens=32)


def thread(name: str) -> dict:
    return {"configurable": {"thread_id": name}}


def comparable(record: dict) -> dict:
    stats = {key: value for key, value in record["stats"].items() if key not in {"seconds", "wall_seconds"}}
    return record | {"stats": stats}


@pytest.fixture(scope="module")
def models() -> tuple[TransformersBackend, TransformersBackend]:
    """Without the prefix cache: the graph and the chat model are compared run by run, accounting included,
    so each must read its whole prompt as if it ran alone (the cache has tests of its own)."""
    return TransformersBackend(GENERATOR, prefix_cache=False), TransformersBackend(MENTOR, prefix_cache=False)


@pytest.fixture(scope="module")
def chat_answer(models):
    generator, mentor = models
    model = ChatMentorCollab(
        generator=generator,
        mentor=mentor,
        probe_rate=CONFIG.probe_rate,
        segment_tokens=CONFIG.segment_tokens,
        max_tokens=CONFIG.max_new_tokens,
        seed=CONFIG.seed,
    )
    answer = model.invoke(PROMPT)
    assert answer.response_metadata["mentorcollab"]["decisions"], "the settings must give at least one decision"
    return answer


def test_same_answer_as_the_chat_model(models, chat_answer) -> None:
    answer = build_mentorcollab_graph(*models, config=CONFIG).invoke({"messages": PROMPT})["answer"]
    assert answer.content == chat_answer.content
    assert answer.usage_metadata == chat_answer.usage_metadata
    record, chat_record = answer.response_metadata["mentorcollab"], chat_answer.response_metadata["mentorcollab"]
    assert comparable(record) == comparable(chat_record)
    assert answer.response_metadata["model_name"] == chat_answer.response_metadata["model_name"]


def test_streams_add_up_to_the_answer_and_spans_carry_the_decisions(models, chat_answer) -> None:
    graph = build_mentorcollab_graph(*models, config=CONFIG)
    custom, updates, messages = [], [], []
    with in_memory_tracing() as exporter:
        for mode, chunk in graph.stream({"messages": PROMPT}, stream_mode=["custom", "updates", "messages"]):
            {"custom": custom, "updates": updates, "messages": messages}[mode].append(chunk)
    answer = chat_answer.content
    record = chat_answer.response_metadata["mentorcollab"]
    texts = [event for event in custom if event["type"] == "text"]
    assert "".join(event["text"] for event in texts) == answer
    mentor_text = "".join(event["text"] for event in texts if event["source"] == "mentor")
    mentor_spans = [span for span in record["spans"] if span["source"] == "mentor"]
    assert mentor_text == "".join(answer[span["start"] : span["end"]] for span in mentor_spans)
    assert "".join(message.content for message, _ in messages) == answer
    decided = [update["verify"]["step"] for update in updates if "verify" in update]
    assert [(d["mentorcollab.choice"], d["mentorcollab.probe.position"]) for d in decided] == [
        (d["choice"], d["position"]) for d in record["decisions"]
    ]
    # The messages stream is the answer exactly, and at each decision the answer goes on with the chosen
    # segment: nothing of the rejected lookahead leaks.
    for decision in record["decisions"]:
        chosen = decision[f"{decision['choice']}_segment"]
        assert answer[decision["position"] :].startswith(chosen)
    spans = node_spans(exporter.get_finished_spans())
    probes = [dict(span.attributes) for span in spans if span.name == "probe"]
    assert len(probes) == record["stats"]["probes"]
    assert all("mentorcollab.generator_word" in p and "mentorcollab.mentor_word" in p for p in probes)
    assert sum(p["mentorcollab.diverged"] for p in probes) == record["stats"]["divergences"]
    verifies = [dict(span.attributes) for span in spans if span.name == "verify"]
    traced = [
        (v["mentorcollab.probe.position"], v["mentorcollab.choice"], v["mentorcollab.verifier_score"],
         v["mentorcollab.verifier"])
        for v in verifies
    ]
    assert traced == [(d["position"], d["choice"], d["score"], d["verifier"]) for d in record["decisions"]]


class _FailingBackend:
    """A real backend whose cursors fail from the n-th model call on (counted across its cursors)."""

    def __init__(self, backend: TransformersBackend, fail_from_call: int) -> None:
        self.backend, self.fail_from_call, self.calls = backend, fail_from_call, 0

    @property
    def model_name(self) -> str:
        return self.backend.model_name

    def open(self, prompt, style="chat", sampling=GREEDY):
        return _FailingCursor(self, self.backend.open(prompt, style, sampling))


class _FailingCursor:
    def __init__(self, owner: _FailingBackend, cursor) -> None:
        self.owner, self.cursor = owner, cursor

    def __getattr__(self, name: str):
        method = getattr(self.cursor, name)
        if name not in {"next_word", "generate", "label_logprobs", "hidden_state"}:
            return method

        def call(*args, **kwargs):
            self.owner.calls += 1
            if self.owner.calls >= self.owner.fail_from_call:
                raise BackendError(f"generator died on call {self.owner.calls}")
            return method(*args, **kwargs)

        return call


def test_a_node_that_raises_resumes_from_its_checkpoint(models, chat_answer, tmp_path: Path) -> None:
    """A node that raised resumes, in a new saver on the same database, from the text and decisions it had.

    Only that much is promised by default: the resumed cursors read the text in one prefill, which can flip
    a near-tie greedy choice later on (``build_mentorcollab_graph``'s ``exact_resume``; the exact repeat is
    the next test's). On a fresh install of 3 December one did, near the end of this answer.
    """
    generator, mentor = models
    database = str(tmp_path / "raise.sqlite")
    with SqliteSaver.from_conn_string(database) as saver:
        failing = build_mentorcollab_graph(_FailingBackend(generator, 12), mentor, config=CONFIG, checkpointer=saver)
        with pytest.raises(BackendError, match="died"):
            failing.invoke({"messages": PROMPT}, thread("raise"))
        died = failing.get_state(thread("raise")).values["collab"]
        assert died.text and chat_answer.content.startswith(died.text)  # died midway, on the uninterrupted path
    with SqliteSaver.from_conn_string(database) as saver:
        graph = build_mentorcollab_graph(generator, mentor, config=CONFIG, checkpointer=saver)
        result = graph.invoke(None, thread("raise"))
        resumed = result["answer"].response_metadata["mentorcollab"]
        assert result["answer"].content.startswith(died.text) and len(result["answer"].content) > len(died.text)
        assert resumed["finish_reason"] in ("stop", "length")
        kept = [decision.model_dump(mode="json") for decision in died.decisions]
        assert resumed["decisions"][: len(kept)] == kept
        logged = [decision["position"] for decision in decision_log(graph, thread("raise"))]
        assert logged == [decision["position"] for decision in resumed["decisions"]]


def test_exact_resume_repeats_the_uninterrupted_run_exactly(models) -> None:
    """With exact_resume every node starts from cursors rebuilt from text, as a resumed run does."""
    generator, mentor = models
    straight = build_mentorcollab_graph(generator, mentor, config=CONFIG, exact_resume=True)
    uninterrupted = straight.invoke({"messages": PROMPT})
    saver = InMemorySaver()
    failing = build_mentorcollab_graph(
        _FailingBackend(generator, 10), mentor, config=CONFIG, checkpointer=saver, exact_resume=True
    )
    with pytest.raises(BackendError):
        failing.invoke({"messages": PROMPT}, thread("exact"))
    graph = build_mentorcollab_graph(generator, mentor, config=CONFIG, checkpointer=saver, exact_resume=True)
    resumed = graph.invoke(None, thread("exact"))
    assert resumed["answer"].content == uninterrupted["answer"].content
    assert comparable(resumed["answer"].response_metadata["mentorcollab"]) == comparable(
        uninterrupted["answer"].response_metadata["mentorcollab"]
    )


WORKER = """
import json, sys, time
from langgraph.checkpoint.sqlite import SqliteSaver
from graphs import build_mentorcollab_graph
from mentorcollab_langchain.backends import GREEDY, TransformersBackend
from mentorcollab_langchain.engine import CollabConfig

database, mode = sys.argv[1], sys.argv[2]
config = CollabConfig.model_validate_json(sys.argv[3])
prompt = json.loads(sys.argv[4])


class Slow:
    # Sleeps before each generator call, to leave time to kill the process midway; the text is unchanged.
    def __init__(self, backend):
        self.backend = backend
        self.model_name = backend.model_name

    def open(self, prompt, style="chat", sampling=GREEDY):
        cursor = self.backend.open(prompt, style, sampling)
        original = cursor.next_word

        def next_word(*args, **kwargs):
            time.sleep(0.15)
            return original(*args, **kwargs)

        cursor.next_word = next_word
        return cursor


generator = TransformersBackend(sys.argv[5])
mentor = TransformersBackend(sys.argv[6])
with SqliteSaver.from_conn_string(database) as saver:
    writer = Slow(generator) if mode == "start" else generator
    # exact_resume: the resumed process rebuilds its caches from the text, so both runs must do the same
    # arithmetic for the texts to be comparable exactly (a near-tie may fall either way otherwise).
    graph = build_mentorcollab_graph(writer, mentor, config=config, checkpointer=saver, exact_resume=True)
    thread = {"configurable": {"thread_id": "killed"}}
    result = graph.invoke({"messages": prompt} if mode == "start" else None, thread)
    print(json.dumps({"text": result["answer"].content}))
"""


def _checkpoints(database: Path) -> int:
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return connection.execute("select count(*) from checkpoints where thread_id = 'killed'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_a_killed_process_resumes_in_a_new_one_with_the_same_text(models, tmp_path: Path) -> None:
    script, database = tmp_path / "worker.py", tmp_path / "killed.sqlite"
    script.write_text(WORKER)
    environment = os.environ | {"PYTHONPATH": str(REPO)}
    arguments = [sys.executable, str(script), str(database)]
    settings = [CONFIG.model_dump_json(), json.dumps(PROMPT), GENERATOR, MENTOR]
    worker = subprocess.Popen(
        [*arguments, "start", *settings], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 240
        while _checkpoints(database) < 6 and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.poll() is None, (
            "the worker ended before it could be killed: " + worker.stderr.read().decode()[-2000:]
        )
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    with SqliteSaver.from_conn_string(str(database)) as saver:
        # The graph object only reads the checkpoint here; the models are not loaded.
        graph = build_mentorcollab_graph(
            TransformersBackend(GENERATOR), TransformersBackend(MENTOR), config=CONFIG, checkpointer=saver
        )
        stopped = graph.get_state(thread("killed"))
        assert stopped.next and stopped.values["collab"].finish_reason is None  # killed midway
    resumed = subprocess.run(
        [*arguments, "resume", *settings], env=environment, capture_output=True, text=True, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    uninterrupted = build_mentorcollab_graph(*models, config=CONFIG, checkpointer=InMemorySaver(), exact_resume=True)
    expected = uninterrupted.invoke({"messages": PROMPT}, thread("uninterrupted"))["answer"].content
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["text"] == expected


@pytest.mark.parametrize("choice", ["generator", "mentor"])
def test_human_verifier_decides_every_divergence(models, choice: str) -> None:
    generator, mentor = models
    graph = build_mentorcollab_graph(
        generator, mentor, config=CONFIG, checkpointer=InMemorySaver(), human_verifier=True
    )
    result = graph.invoke({"messages": PROMPT}, thread(choice))
    shown = result["__interrupt__"][0].value
    generator_segment, mentor_segment = shown["generator_segment"], shown["mentor_segment"]
    assert generator_segment and mentor_segment and generator_segment != mentor_segment
    assert shown["verifier"] == DEFAULT_VERIFIER and 0.0 <= shown["verifier_score"] <= 1.0
    with pytest.raises(InvalidResumeError, match="Command"):
        graph.invoke(Command(resume="option B"), thread(choice))
    asked = 1
    while "__interrupt__" in (result := graph.invoke(Command(resume=choice), thread(choice))):
        asked += 1
    record = result["answer"].response_metadata["mentorcollab"]
    assert len(record["decisions"]) == asked == record["stats"]["divergences"]
    assert all(d["choice"] == choice and d["verifier"] == "human" for d in record["decisions"])
    # Choosing one side at every divergence is what the matching baseline verifier does.
    baseline = run_collaboration(
        PROMPT, generator, mentor, verifier="always-mentor" if choice == "mentor" else "never-mentor", config=CONFIG
    )
    assert result["answer"].content == baseline.text
