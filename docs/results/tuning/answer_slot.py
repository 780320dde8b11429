"""Tune the uncertain probe policy and the mentor-margin verifier at the answer slot, on tuning data only.

On a five-shot multiple-choice prompt the whole answer is one word (" C"), so where the generator's
confidence sends the probe and what the verifier then decides can be measured once per question and
replayed offline for every threshold. For each tuning question this records, through the project's own
cursors (the same calls the engine makes):

- the generator's first word and its ``Confidence`` (``next_word(..., with_confidence=True)``);
- the mentor's first word, and the tokens the mentor read to write it (the prompt);
- at a divergence, both words' log-probabilities under the mentor (``score_continuation``), what the
  ``mentor-margin`` verifier compares.

    python docs/results/tuning/answer_slot.py arc_challenge validation 0 100 > docs/results/tuning/arc_challenge.jsonl
    python docs/results/tuning/answer_slot.py csqa validation 200 100 > docs/results/tuning/csqa.jsonl
    python docs/results/tuning/answer_slot.py --summary docs/results/tuning/*.jsonl

None of these questions is in an evaluation sample: the evaluations take ARC-Challenge *test* and the
first 100 CommonsenseQA validation questions of the fixed order (``tests/unit/evals/test_tuning_data.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mentorcollab_langchain.backends import LlamaCppBackend
from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.evals.extract import extract_choice
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.models import DEFAULT_GENERATOR, DEFAULT_MENTOR

THRESHOLDS = (0.52, 0.53, 0.54, 0.55, 0.56, 0.58, 0.6, 1.01)
MARGINS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)


def record(benchmark: str, split: str, offset: int, limit: int) -> None:
    # As `mentorcollab eval` runs them (llama.cpp in process); one thread each, since this ran beside other
    # jobs, where llama.cpp's threads wait for each other (the results do not depend on the thread count).
    generator, mentor = LlamaCppBackend(DEFAULT_GENERATOR, n_threads=1), LlamaCppBackend(DEFAULT_MENTOR, n_threads=1)
    for question in load_questions(benchmark, split, limit, offset=offset):
        built = build_prompt(question, "fewshot")
        ours = generator.open(built.prompt, built.style)
        theirs = mentor.open(built.prompt, built.style)
        word = ours.next_word("", 12, with_confidence=True)
        mentor_word = theirs.next_word("", 12)
        row = {
            "benchmark": benchmark, "split": split, "question_id": question.id, "gold": question.gold,
            "generator_word": word.text, "mentor_word": mentor_word.text,
            "generator_choice": extract_choice(word.text, question.labels),
            "mentor_choice": extract_choice(mentor_word.text, question.labels),
            "top_probability": word.confidence.top_probability,
            "runner_up_probability": word.confidence.runner_up_probability,
            "entropy": word.confidence.entropy,
            "mentor_prompt_tokens": theirs.tokens_read,
        }
        if word.text != mentor_word.text:
            row["mentor_logprob_of_mentor_word"] = theirs.score_continuation("", mentor_word.text).mean_logprob
            row["mentor_logprob_of_generator_word"] = theirs.score_continuation("", word.text).mean_logprob
        print(json.dumps(row), flush=True)
        ours.close()
        theirs.close()


def summary(files: list[Path]) -> None:
    """Accuracy, gap recovered and mentor reading for each threshold and margin, per benchmark."""
    rows = [json.loads(line) for file in files for line in file.read_text().splitlines() if line.strip()]
    for benchmark in sorted({row["benchmark"] for row in rows}):
        sample = [row for row in rows if row["benchmark"] == benchmark]
        generator = sum(row["generator_choice"] == row["gold"] for row in sample) / len(sample)
        mentor = sum(row["mentor_choice"] == row["gold"] for row in sample) / len(sample)
        print(f"\n{benchmark}: n={len(sample)}, generator {generator:.1%}, mentor {mentor:.1%}")
        print("| top_share below | margin | probed | adopted | accuracy | gap recovered |")
        print("|---|---|---|---|---|---|")
        for threshold in THRESHOLDS:
            for margin in MARGINS:
                probed = adopted = correct = 0
                for row in sample:
                    share = row["top_probability"] / (row["top_probability"] + row["runner_up_probability"])
                    answer = row["generator_choice"]
                    if share < threshold:
                        probed += 1
                        if row["generator_word"] != row["mentor_word"] and (
                            row["mentor_logprob_of_mentor_word"] - row["mentor_logprob_of_generator_word"] > margin
                        ):
                            adopted += 1
                            answer = row["mentor_choice"]
                    correct += answer == row["gold"]
                accuracy = correct / len(sample)
                gap = (accuracy - generator) / (mentor - generator) if mentor > generator else float("nan")
                print(f"| {threshold:g} | {margin:g} | {probed / len(sample):.0%} | {adopted} | {accuracy:.1%} "
                      f"| {gap:.0%} |")


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary([Path(name) for name in sys.argv[2:]])
    else:
        record(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
