"""Training records for a pointwise verifier: the exact prompt the search's pointwise verifier sends
(stage_search.judge.JudgeContext.scored_messages: the answer ending with the candidate, then the
question whether it is right), answered "yes" or "no".

Three sources, all labelled by the scenes' ground truth (training/labels.py):
- on-policy: a model's own candidates from the search (`training.judge_data.collect_candidates`);
- counterfactual: each scene's own staged answer beside a copy with one stage made wrong (a
  conclusion naming another option or value, a reasoning or a caption with one number changed), so
  every scene gives a right and a wrong candidate of the same stage in the same context;
- drills: short text-only records of the one check the demo model gets wrong, whether the option
  a conclusion picks (quoted after it) is the value the reasoning gives (`bare_verdict_drills`: the
  reasoning and the conclusion alone; `verdict_drills`: the verifier's own turns about each option
  of a question). They are short, so the check forms in far fewer steps than in whole records
  (docs/data.md).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from stage_search.choices import picked_option
from stage_search.judge import JudgeContext
from stage_search.prompts import quoted_option, verify_question
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


def _drill_question(rng: random.Random) -> tuple[str, list[str], Callable[[str], str], str]:
    """A question with four options, a function from an option's value to a reasoning that gives
    it, and the value to reason to: one that is easy to mistake for another option (a neighbouring
    count, one of the two colors compared, one the counts name, a tie), as the demo model's own
    wrong conclusions are. Kinds: count by color, count by shape, most frequent color, compare."""
    kind = rng.choice((0, 1, 2, 3))
    if kind < 2:
        values = [str(v) for v in rng.sample(range(8), 4)]
        color, shape = rng.choice(list(COLORS)), rng.choice(("circle", "square", "triangle"))
        question, reasoning = _COUNT_KINDS if kind == 0 else _SHAPE_KINDS
        near = [v for v in values if str(int(v) - 1) in values or str(int(v) + 1) in values]
        truth = rng.choice(near or values)
        return question.format(c=color, s=shape), values, lambda v: reasoning.format(c=color, s=shape, v=v), truth
    values = rng.sample([*COLORS, "same"] if kind == 3 else list(COLORS), 4)
    named = [v for v in values if v in COLORS]
    if kind == 2:
        n = rng.randint(2, 5)

        def most(v: str) -> str:
            pool = [c for c in named if c != v]
            others = rng.sample(pool, min(2, len(pool)))
            if rng.random() < 0.3:  # a tie, worded as the demo model words it
                tied = sorted({v, others[0]})
                counts = ", ".join(f"{n if c in tied else rng.randint(0, n - 1)} {c}" for c in sorted({v, *others}))
                return (
                    f"The counts by color are {counts}; {' and '.join(tied)} tie with {n}, "
                    f"so {v} is one of the most frequent."
                )
            counts = ", ".join(f"{n if c == v else rng.randint(0, n - 1)} {c}" for c in sorted({v, *others}))
            return _MOST_KINDS[1].format(counts=counts, v=v, n=n)

        return _MOST_KINDS[0], values, most, rng.choice(values)
    a, b = rng.sample(named, 2)

    def compare(v: str) -> str:
        if v == "same":
            n = rng.randint(0, 4)
            return f"There are {n} {a} and {n} {b} shapes; both counts are {n}, so the numbers are the same."
        big, small, other = rng.randint(2, 5), rng.randint(0, 1), b if v != b else a
        return (
            f"There are {big} {v} and {small} {other} shapes; {big} is more than {small}, so there are more {v} shapes."
        )

    sensible = [v for v in values if v in (a, b, "same")]
    return _COMPARE.format(a=a, b=b), values, compare, rng.choice(sensible or values)


def _options(values: Sequence[str]) -> str:
    return "\n".join(f"{LETTERS[i]}. {v}" for i, v in enumerate(values))


def _with_options(question: str, values: Sequence[str]) -> str:
    return f"{question}\n{_options(values)}\nAnswer with the option's letter."


def _drills(n: int, seed: int, stages: StageSet | None) -> Iterator[tuple]:
    """Each drill's index, question, options, tagged reasoning and right value, the conclusion stage,
    and the generator that goes on to order its candidates."""
    stages = stages or StageSet.from_names()
    reasoning, conclusion = stages.stages[2], stages.stages[3]
    rng = random.Random(seed)
    for index in range(n):
        question, values, reason, value = _drill_question(rng)
        yield index, question, values, reasoning.tagged(reason(value)), value, conclusion, rng


def verdict_drills(n: int, seed: int, stages: StageSet | None = None) -> list[dict]:
    """Text-only verifier turns: a question with options, a reasoning, then the verifier's question
    about one option's conclusion (the option quoted) and its verdict. Each drill question gives
    four records, one per option in a random order, grouped: one right candidate beside three wrong
    ones that are easy to mistake for it (`_drill_question`). Each is the search's pointwise prompt
    without the image, summary and caption. One candidate to a record, as in the search: with all
    four in one context, each after the ones before and their verdicts, the check did not form in
    400 steps (chance on held-out drills); one to a record, it did (docs/benchmarks.md)."""
    records = []
    for index, question, values, reasoning, value, conclusion, rng in _drills(n, seed, stages):
        context = [
            {"from": "human", "value": _with_options(question, values)},
            {"from": "gpt", "value": reasoning},
        ]
        for turn, letter in enumerate(rng.sample(LETTERS, len(LETTERS))):
            candidate, picked = conclusion.tagged(letter).rstrip(), picked_option(context[0]["value"], letter)
            right = values[LETTERS.index(letter)] == value
            records.append(
                {
                    "id": f"drill-verdict-{seed}-{index}-{2 * turn + 2}",
                    "stage": "CONCLUSION",
                    "right": right,
                    "group": f"drill-verdict-{seed}-{index}",
                    "conversations": [
                        *context,
                        {"from": "human", "value": verify_question(conclusion, candidate, picked)},
                        {"from": "gpt", "value": VERDICTS[right]},
                    ],
                }
            )
    return records


def bare_verdict_drills(n: int, seed: int, stages: StageSet | None = None) -> list[dict]:
    """The verdict in its shortest form, where the check forms first: a record is one human turn, a
    reasoning, then a conclusion and the option it picks quoted, answered "yes" or "no". Each
    drill question (`_drill_question`) gives four records, one per option, grouped so that
    they come into a batch together. Without the question, the options and the verifier's long
    question in between, a fresh model learns it in a couple of hundred steps; the verifier of
    phases that started with the letter lookup never learnt the colors at all (docs/benchmarks.md)."""
    records = []
    for index, _, values, reasoning, value, conclusion, rng in _drills(n, seed, stages):
        text = reasoning.strip()
        for letter in rng.sample(LETTERS, len(LETTERS)):
            option = values[LETTERS.index(letter)]
            candidate = f"{text}\n\n{conclusion.tagged(letter).rstrip()}{quoted_option((letter, option))}"
            records.append(
                {
                    "id": f"drill-bare-verdict-{seed}-{index}-{letter}",
                    "kind": "verify",
                    "stage": "CONCLUSION",
                    "right": option == value,
                    "group": f"drill-bare-verdict-{seed}-{index}",
                    "conversations": [
                        {"from": "human", "value": candidate},
                        {"from": "gpt", "value": VERDICTS[option == value]},
                    ],
                }
            )
    return records


def write_records(path: Path, records: Sequence[dict]) -> Path:
    with open(path, "w") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")
    return path
