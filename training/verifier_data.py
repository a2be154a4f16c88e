"""Training records for a pointwise verifier: the exact prompt the search's pointwise verifier sends
(stage_search.judge.JudgeContext.scored_messages: the answer ending with the candidate, then the
question whether it is right), answered "yes" or "no".

Three sources, all labelled by the scenes' ground truth (training/labels.py):
- on-policy: a model's own candidates from the search (`training.judge_data.collect_candidates`);
- counterfactual: each scene's own staged answer beside a copy with one stage made wrong (a
  conclusion naming another option or value, a reasoning or a caption with one number changed), so
  every scene gives a right and a wrong candidate of the same stage in the same context;
- drills: short text-only records of the one check the demo model gets wrong, finding the option
  whose value the reasoning gives (`lookup_drills`: several per record, the letters learnt;
  `verdict_drills`: the verifier's own turns about several candidates of one, the verdicts learnt).
  They are short, so the lookup forms in far fewer steps than in whole records (docs/data.md).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from stage_search.choices import picked_option
from stage_search.judge import JudgeContext
from stage_search.prompts import verify_question
from stage_search.stages import StageSet
from training.judge_data import Labelled, counterfactual_pairs
from training.records import question_messages, read_questions, to_turns
from training.synthetic_data import COLORS, LETTERS

VERDICTS = {True: "yes", False: "no"}
_NUMBER = re.compile(r"\b\d\b")


def verifier_record(labelled: Labelled, index: int) -> dict:
    """One candidate as a verifier turn: the search's pointwise prompt, then "yes" or "no"."""
    turns = to_turns(labelled.context.scored_messages(labelled.text))
    record = labelled.record
    return {
        "id": f"{record['id']}-verify-{labelled.stage_name}-{index}",
        "image": record.get("image"),
        "kind": "verify",
        "stage": labelled.stage_name,
        "right": labelled.right,
        # The candidates of one step (or a scene's right and wrong copy) are learnt side by side.
        "group": f"{record['id']}-{labelled.stage_name}-{labelled.step}",
        "conversations": [*turns, {"from": "gpt", "value": VERDICTS[labelled.right]}],
    }


def counterfactual_candidates(
    record: dict, stages: StageSet, rng: random.Random, with_scene_stages: bool = True
) -> list[Labelled]:
    """A scene's own right stages beside wrong copies, each in the context the search would judge
    it in: the conclusion and the whole answer (`counterfactual_pairs`), and with
    `with_scene_stages` the reasoning and the caption with one number changed."""
    messages = question_messages(record)
    found = []
    for pair in counterfactual_pairs(record, messages, stages, rng):
        found += [_labelled(pair.record, pair.stage_name, pair.context, pair.right, True)]
        found += [_labelled(pair.record, pair.stage_name, pair.context, pair.wrong, False)]
    if not with_scene_stages:
        return found
    reference = stages.parse(next(t["value"] for t in reversed(record["conversations"]) if t["from"] == "gpt"))
    accepted = ""
    for stage in stages.stages[:-1]:
        text = reference[stage.name]
        wrong = _one_number_changed(text, rng)
        if wrong is not None and stage.index > 0:
            context = JudgeContext(tuple(messages), accepted, stage, stages.stages[0].open_tag)
            found += [_labelled(record, stage.name, context, text, True)]
            found += [_labelled(record, stage.name, context, wrong, False)]
        accepted += stage.tagged(text)
    return found


def _labelled(record: dict, stage_name: str, context: JudgeContext, text: str, right: bool) -> Labelled:
    return Labelled(record, stage_name, context, text, right, 0)


def _one_number_changed(text: str, rng: random.Random) -> str | None:
    """The text with one of its one-digit numbers replaced by another (None when it has none)."""
    numbers = list(_NUMBER.finditer(text))
    if not numbers:
        return None
    chosen = rng.choice(numbers)
    value = int(chosen.group())
    other = rng.choice([n for n in range(8) if n != value])
    return text[: chosen.start()] + str(other) + text[chosen.end() :]


def write_verifier_records(path: Path, candidates: Iterable[Labelled], *, seed: int = 0) -> dict:
    """Write the candidates as verifier records (shuffled); returns counts by stage and label."""
    records = [verifier_record(c, i) for i, c in enumerate(candidates)]
    random.Random(seed).shuffle(records)
    write_records(path, records)
    return dict(sorted(Counter(f"{r['stage']}:{VERDICTS[r['right']]}" for r in records).items()))


def write_counterfactual_verifier(folder: Path, *, seed: int, stages: StageSet | None = None) -> dict:
    """Counterfactual verifier records for the scenes of FOLDER/train.jsonl, into
    FOLDER/verifier_counterfactual.jsonl; returns counts by stage and label."""
    stages = stages or StageSet.from_names()
    rng = random.Random(seed)
    found = [c for r in read_questions(folder / "train.jsonl") for c in counterfactual_candidates(r, stages, rng)]
    return write_verifier_records(folder / "verifier_counterfactual.jsonl", found, seed=seed)


# -- drills ----------------------------------------------------------------------------------------

# Reasoning sentences by question kind, as the synthetic answers word them, for a value `v`.
_COUNT_KINDS = ("How many {c} shapes are in the image?", "Counting the {c} shapes gives {v}.")
_SHAPE_KINDS = ("How many {s}s are in the image?", "Counting the {s}s gives {v}.")
_MOST_KINDS = (
    "Which color is the most frequent in the image?",
    "The counts by color are {counts}; {v} has the most with {n}.",
)
_COMPARE = "Are there more {a} shapes or more {b} shapes?"


ALL_KINDS = (0, 1, 2, 3)  # count by color, count by shape, most frequent color, compare two colors
COUNT_KINDS = (0, 1)


def _drill_question(
    rng: random.Random, kinds: Sequence[int] = ALL_KINDS, hard: bool = False
) -> tuple[str, list[str], Callable[[str], str], Callable[[], str]]:
    """A question with four options, a function from an option's value to a reasoning that gives
    it, and a draw of the value to reason to (drawn only when asked: lookup drills keep the data
    their seeds gave before). `hard`: the truth is one that is easy to mistake for another option
    (a neighbouring count, one of the two colors compared, one the counts name, a tie), as the
    demo model's own wrong conclusions are."""
    kind = rng.choice(kinds)
    if kind < 2:
        values = [str(v) for v in rng.sample(range(8), 4)]
        color, shape = rng.choice(list(COLORS)), rng.choice(("circle", "square", "triangle"))
        question, reasoning = _COUNT_KINDS if kind == 0 else _SHAPE_KINDS
        near = [v for v in values if str(int(v) - 1) in values or str(int(v) + 1) in values]
        truth = lambda: rng.choice(near if hard and near else values)
        return question.format(c=color, s=shape), values, lambda v: reasoning.format(c=color, s=shape, v=v), truth
    values = rng.sample([*COLORS, "same"] if kind == 3 else list(COLORS), 4)
    named = [v for v in values if v in COLORS]
    if kind == 2:
        n = rng.randint(2, 5)

        def most(v: str) -> str:
            pool = [c for c in named if c != v]
            others = rng.sample(pool, min(2, len(pool))) if hard else rng.sample(list(COLORS), 2)
            if hard and rng.random() < 0.3:  # a tie, worded as the demo model words it
                tied = sorted({v, others[0]})
                counts = ", ".join(f"{n if c in tied else rng.randint(0, n - 1)} {c}" for c in sorted({v, *others}))
                return (
                    f"The counts by color are {counts}; {' and '.join(tied)} tie with {n}, "
                    f"so {v} is one of the most frequent."
                )
            counts = ", ".join(f"{n if c == v else rng.randint(0, n - 1)} {c}" for c in sorted({v, *others}))
            return _MOST_KINDS[1].format(counts=counts, v=v, n=n)

        return _MOST_KINDS[0], values, most, lambda: rng.choice(values)
    a, b = rng.sample(named if hard else list(COLORS), 2)

    def compare(v: str) -> str:
        if v == "same":
            n = rng.randint(0, 4)
            return f"There are {n} {a} and {n} {b} shapes; both counts are {n}, so the numbers are the same."
        big, small, other = rng.randint(2, 5), rng.randint(0, 1), b if v != b else a
        return (
            f"There are {big} {v} and {small} {other} shapes; {big} is more than {small}, so there are more {v} shapes."
        )

    sensible = [v for v in values if v in (a, b, "same")]
    return _COMPARE.format(a=a, b=b), values, compare, lambda: rng.choice(sensible if hard and sensible else values)


def _options(values: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {v}" for i, v in enumerate(values))


def _with_options(question: str, values: Sequence[str]) -> str:
    return f"{question}\n{_options(values)}\nAnswer with the option's letter."


def lookup_drills(
    n: int, seed: int, stages: StageSet | None = None, kinds: Sequence[int] = ALL_KINDS, bare: bool = False
) -> list[dict]:
    """Text-only records: a question with four options, answered four times over, once for each
    option's value in a random order: a reasoning that gives the value, then the conclusion naming
    its letter. Only the letters are learnt (`targets`: turn, start, end): the lookup the demo model
    gets wrong. `bare`: the options alone, without the question around them (the shortest form,
    where the lookup forms first)."""
    stages = stages or StageSet.from_names()
    reasoning, conclusion = stages.stages[2], stages.stages[3]
    rng = random.Random(seed)
    records = []
    for index in range(n):
        question, values, reason, _ = _drill_question(rng, kinds)
        answer, targets = "", []
        for value in rng.sample(list(values), len(values)):
            answer += f"{reasoning.tagged(reason(value))}{conclusion.open_tag}"
            targets.append((1, len(answer), len(answer) + 1))
            answer += f"{LETTERS[values.index(value)]}{conclusion.close_tag}\n\n"
        records.append(
            {
                "id": f"drill-lookup-{seed}-{index}",
                "kind": "drill",
                "conversations": [
                    {"from": "human", "value": _options(values) if bare else _with_options(question, values)},
                    {"from": "gpt", "value": answer.rstrip()},
                ],
                "targets": targets,
            }
        )
    return records


def verdict_drills(
    n: int, seed: int, stages: StageSet | None = None, candidates: int = 4, hard: bool = False
) -> list[dict]:
    """Text-only verifier turns around one lookup, several to a record: a question with options, a
    reasoning, then `candidates` times the verifier's question about a conclusion (each letter drawn
    at random, so a record may hold any number of right ones) and its verdict, the verdicts learnt.
    Each turn is the search's pointwise prompt without the image, summary and caption; side by side
    in one context, only the candidates tell the verdicts apart. `hard`: the options are chosen to
    be confusable (`_drill_question`) and every option is judged once, in a random order: one right
    candidate beside three wrong ones."""
    stages = stages or StageSet.from_names()
    reasoning, conclusion = stages.stages[2], stages.stages[3]
    rng = random.Random(seed)
    records = []
    for index in range(n):
        question, values, reason, draw = _drill_question(rng, hard=hard)
        value = draw()
        truth = LETTERS[values.index(value)]
        turns = [
            {"from": "human", "value": _with_options(question, values)},
            {"from": "gpt", "value": reasoning.tagged(reason(value))},
        ]
        targets = []
        letters = rng.sample(LETTERS, len(LETTERS)) if hard else [rng.choice(LETTERS) for _ in range(candidates)]
        for letter in letters:
            candidate, picked = conclusion.tagged(letter).rstrip(), picked_option(turns[0]["value"], letter)
            turns.append({"from": "human", "value": verify_question(conclusion, candidate, picked)})
            targets.append([len(turns), 0, len(VERDICTS[letter == truth])])
            turns.append({"from": "gpt", "value": VERDICTS[letter == truth]})
        records.append(
            {"id": f"drill-verdict-{seed}-{index}", "kind": "drill", "conversations": turns, "targets": targets}
        )
    return records


def write_records(path: Path, records: Sequence[dict]) -> Path:
    with open(path, "w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path
