"""Is the self-consult verifier's refusal to adopt the mentor a position bias or a self-preference?

Re-asks the generator (SmolLM2-135M-Instruct, transformers) every recorded divergence of the
always-probe runs twice: as the paper's verifier asks it (Option A = its own segment, B = the
mentor's) and with the options swapped. Prints P(choose the mentor) in both orders, whether the mentor
was right, and what the average of the two orders (the default verifier) decides.

    python docs/results/verifier_order_check.py runs/eval > docs/results/verifier_order_check.txt
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from mentorcollab_langchain.backends import TransformersBackend
from mentorcollab_langchain.evals.data import load_questions
from mentorcollab_langchain.evals.prompts import build_prompt
from mentorcollab_langchain.evals.runner import read_results
from mentorcollab_langchain.verifiers.self_consult import SELF_CONSULT_QUESTION


def p_second(cursor, text: str, first: str, second: str) -> float:
    a, b = cursor.label_logprobs(text + SELF_CONSULT_QUESTION.format(first=first, second=second), ["A", "B"])
    return 1.0 / (1.0 + math.exp(a - b))


def main(results: Path) -> None:
    generator = TransformersBackend("smollm2-135m-instruct")
    questions = {}
    rows = []
    for record in read_results(results):
        if not record["method"].startswith("mentorcollab (p=1") or not record.get("decisions"):
            continue
        key = (record["benchmark"], record["split"])
        if key not in questions:
            questions[key] = {q.id: q for q in load_questions(*key)}
        question = questions[key][record["question_id"]]
        built = build_prompt(question, "fewshot")
        cursor = generator.open(built.prompt, built.style)
        for decision in record["decisions"]:
            text = record["response"][: decision["position"]]
            mentor_first = 1.0 - p_second(cursor, text, decision["mentor_segment"], decision["generator_segment"])
            mentor_second = p_second(cursor, text, decision["generator_segment"], decision["mentor_segment"])
            mentor_letter = decision["mentor_word"].strip()[:1]
            rows.append((record["benchmark"], record["question_id"], question.gold, decision["generator_word"].strip(),
                         decision["mentor_word"].strip(), mentor_second, mentor_first, mentor_letter == question.gold))
        cursor.close()
    print("benchmark question gold generator_word mentor_word P(mentor|mentor=B) P(mentor|mentor=A) mentor_right")
    for row in rows:
        print(f"{row[0]} {row[1]} {row[2]} {row[3]!r} {row[4]!r} {row[5]:.3f} {row[6]:.3f} {row[7]}")
    n = len(rows)
    if n:
        as_engine = sum(row[5] > 0.5 for row in rows)
        swapped = sum(row[6] > 0.5 for row in rows)
        print(f"\n{n} divergences. Mentor chosen as the engine asks (mentor = option B): {as_engine}/{n}; "
              f"with the options swapped (mentor = option A): {swapped}/{n}. Mean P(mentor): "
              f"{sum(row[5] for row in rows) / n:.3f} as B, {sum(row[6] for row in rows) / n:.3f} as A.")
        both = [((row[5] + row[6]) / 2 > 0.5, row[7]) for row in rows]
        right = sum(mentor_right for _, mentor_right in both)
        print(f"Both orders averaged (the default verifier, self-consult-both-orders): "
              f"adopts {sum(a for a, _ in both)}/{n}; "
              f"{sum(a and r for a, r in both)}/{right} where the mentor's letter was right, "
              f"{sum(a and not r for a, r in both)}/{n - right} where it was not.")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/eval"))
