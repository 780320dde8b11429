"""What caps MentorCollab on multiple choice: the probe policy, the verifier, or the pair itself?

Reads the evaluation records and, for each multiple-choice benchmark, replays the default method's
probes with better deciders, question by question:

- as run: the default method's accuracy;
- oracle verifier: the same probes and divergences, but every divergence decided for whichever of the
  two answers is right (the most any verifier could make of these probes);
- oracle probes: every question probed and decided by an oracle, i.e. right whenever the generator or
  the mentor alone is right (the most the method can reach with this pair);
- precision of the verifier's adoptions (how often the adopted mentor letter was right) and how many
  of the mentor-right divergences it adopted.

    python docs/results/ceiling.py runs/eval-v2 > docs/results/ceiling.md
    python docs/results/ceiling.py docs/results/resample/csqa "mentorcollab (t=0.528708)"

The optional second argument names the method to replay, as the report labels it (default:
``mentorcollab``).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from mentorcollab_langchain.evals.extract import extract_choice
from mentorcollab_langchain.evals.runner import label_for_key, read_results


def main(folder: Path, method: str = "mentorcollab") -> None:
    by_question: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for record in read_results(folder):
        label = label_for_key(record.get("method_key", {})) or record["method"]
        by_question[(record["benchmark"], record["question_id"])][label] = record
    print("| benchmark | n | generator | mentor | default, as run | oracle verifier, same probes | "
          "oracle probes and verifier | questions probed | divergences | adoptions right / made | "
          "mentor-right divergences adopted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for benchmark in sorted({key[0] for key in by_question}):
        rows = [methods for (name, _), methods in by_question.items() if name == benchmark
                and {"generator", "mentor", method} <= set(methods)]
        if not rows or rows[0][method]["gold"] not in "ABCDEFGHIJ":
            continue
        n = len(rows)
        generator = sum(row["generator"]["correct"] for row in rows)
        mentor = sum(row["mentor"]["correct"] for row in rows)
        run = sum(row[method]["correct"] for row in rows)
        union = sum(row["generator"]["correct"] or row["mentor"]["correct"] for row in rows)
        oracle = probed = diverged = adopted = adopted_right = mentor_right = mentor_right_adopted = 0
        for row in rows:
            record = row[method]
            probed += record["stats"]["probes"] > 0
            correct = record["correct"]
            for decision in record["decisions"]:
                diverged += 1
                gold = record["gold"]
                mentor_letter = extract_choice(decision["mentor_word"])
                generator_letter = extract_choice(decision["generator_word"])
                mentor_right += mentor_letter == gold
                if decision["choice"] == "mentor":
                    adopted += 1
                    adopted_right += mentor_letter == gold
                    mentor_right_adopted += mentor_letter == gold
                correct = correct or gold in (mentor_letter, generator_letter)
            oracle += correct
        print(f"| {benchmark} | {n} | {generator / n:.0%} | {mentor / n:.0%} | {run / n:.0%} | {oracle / n:.0%} | "
              f"{union / n:.0%} | {probed / n:.0%} | {diverged} | {adopted_right} / {adopted} | "
              f"{mentor_right_adopted} of {mentor_right} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]), *sys.argv[2:3])
