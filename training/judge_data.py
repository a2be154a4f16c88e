"""`llava-o1 judge-data`: on-policy training data for the pairwise judge (self-judging, as in the paper).

A model answers fresh synthetic scenes through the search's own code (stage search and best-of-N,
at the search temperature), so every prompt is the one the server sends. Every candidate is then
labelled against the scene's ground truth (training/labels.py), and each pair where one side is
right and the other wrong becomes judge turns, built with the judge's own context and question
(stage_search.judge.JudgeContext, stage_search.prompts.judge_question), in both orders:

- `judge.jsonl`: the logprob judge's form, target "1" or "2";
- `judge_generative.jsonl`: the generative judge's form, a short reason ending "I choose response N";
- `train.jsonl` (and `images/`): the scenes' own staged answers, to train on beside the judge turns;
- with `--counterfactual`, `judge_counterfactual.jsonl` (and its generative form): off-policy pairs
  that need no sampling, each scene's own right conclusion against a wrong one (`counterfactual_pairs`);
- `verifier.jsonl`: every judged candidate alone, as the pointwise verifier's turn, target "yes" or
  "no" (training/verifier_data.py; with `--counterfactual` also `verifier_counterfactual.jsonl`).

Stage pairs continue the answer the search accepted up to that stage; whole-answer pairs (stage
"answer") are best-of-N's. All files are in the LLaVA conversation format `llava-o1 train` reads.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from models.engine import ChatMessage, Engine
from stage_search.config import SearchConfig
from stage_search.judge import JudgeContext
from stage_search.prompts import judge_question
from stage_search.search import run_search
from stage_search.search_job import SearchJob
from stage_search.stages import Stage, StageSet
from stage_search.trace import SearchResult, StepTrace
from training.labels import WHOLE_ANSWER, StageLabeler
from training.records import question_messages, read_questions, to_turns
from training.synthetic_data import COLORS

# What the generative verdict says the right response did, by stage (WHOLE_ANSWER for whole answers).
REASONS = {
    "SUMMARY": "plans the steps the question needs",
    "CAPTION": "describes the shapes in the image correctly",
    "REASONING": "counts correctly from the description",
    "CONCLUSION": "gives the answer the reasoning leads to",
    WHOLE_ANSWER: "ends in the correct answer",
}


@dataclass(frozen=True)
class Pair:
    """One labelled comparison: the judge's context, the right and the wrong candidate's texts."""

    record: dict
    stage_name: str
    context: JudgeContext
    right: str
    wrong: str


@dataclass(frozen=True)
class Labelled:
    """One candidate the search judged (a step's distinct texts), labelled against the scene."""

    record: dict
    stage_name: str
    context: JudgeContext
    text: str
    right: bool
    step: int  # which step of the record and stage it came from: pairs are made within a step


def stage_candidates(
    record: dict, messages: list[ChatMessage], result: SearchResult, stages: StageSet
) -> list[Labelled]:
    """Each stage's judged candidates, labelled, in the context the search judged them in."""
    labeler = StageLabeler(record, stages)
    found: list[Labelled] = []
    accepted = ""
    for stage, trace in zip(stages, result.stages, strict=True):
        if trace.steps:
            context = JudgeContext(tuple(messages), accepted, stage, whole_opening=stages.stages[0].open_tag)
            found += _labelled(
                record, stage.name, context, trace.steps[-1], lambda t, s=stage: labeler.is_right(s.index, t)
            )
        accepted += stage.tagged(trace.text)
    return found


def whole_answer_candidates(
    record: dict, messages: list[ChatMessage], result: SearchResult, stages: StageSet
) -> list[Labelled]:
    labeler = StageLabeler(record, stages)
    context = JudgeContext(tuple(messages), "", None, whole_opening=stages.stages[0].open_tag)
    return [
        labelled
        for number, step in enumerate(result.answer_steps)
        for labelled in _labelled(record, WHOLE_ANSWER, context, step, labeler.whole_answer_is_right, number)
    ]


def _labelled(
    record: dict, stage_name: str, context: JudgeContext, step: StepTrace, is_right, number: int = 0
) -> list[Labelled]:
    judged = [c.text for c in step.candidates if c.merged_into is None]  # merged copies are never judged
    return [Labelled(record, stage_name, context, text, is_right(text), number) for text in judged]


def pairs_of(candidates: Sequence[Labelled]) -> list[Pair]:
    """Every right-wrong pair of candidates of one step."""
    by_step: dict[tuple[str, str, int], list[Labelled]] = {}
    for labelled in candidates:
        by_step.setdefault((labelled.record["id"], labelled.stage_name, labelled.step), []).append(labelled)
    return [
        Pair(r.record, r.stage_name, r.context, r.text, w.text)
        for group in by_step.values()
        for r in group
        if r.right
        for w in group
        if not w.right
    ]


def stage_pairs(record: dict, messages: list[ChatMessage], result: SearchResult, stages: StageSet) -> list[Pair]:
    """Right-wrong pairs of each stage's candidates, in the context the search judged them in."""
    return pairs_of(stage_candidates(record, messages, result, stages))


def whole_answer_pairs(record: dict, messages: list[ChatMessage], result: SearchResult, stages: StageSet) -> list[Pair]:
    return pairs_of(whole_answer_candidates(record, messages, result, stages))


def counterfactual_pairs(record: dict, messages: list[ChatMessage], stages: StageSet, rng: random.Random) -> list[Pair]:
    """Off-policy pairs that need no sampling: after the record's own (right) stages, its right
    conclusion against a wrong one, as a stage pair and as whole answers. For multiple choice the
    wrong one is another option's letter (the demo model's errors are almost all of that kind);
    for open answers, another value of the same kind."""
    reference = StageLabeler(record, stages).reference
    last = stages.last
    right = reference[last.name]
    if "options" in record:
        letters = "ABCD"[: len(record["options"])]
        wrong = rng.choice([letter for letter in letters if letter != right.strip()])
    else:
        values = [str(n) for n in range(8)] if right.strip(" .").split()[-1].isdigit() else [*COLORS, "same"]
        answer = right.strip(" .").split()[-1]
        wrong = right.replace(answer, rng.choice([v for v in values if v != answer]))
    accepted = "".join(s.tagged(reference[s.name]) for s in stages.stages[:-1])
    whole = {**reference}
    first_tag = stages.stages[0].open_tag
    right_whole = stages.render(whole).removeprefix(first_tag)
    wrong_whole = stages.render({**whole, last.name: wrong}).removeprefix(first_tag)
    return [
        Pair(record, last.name, JudgeContext(tuple(messages), accepted, last, first_tag), right, wrong),
        Pair(record, WHOLE_ANSWER, JudgeContext(tuple(messages), "", None, first_tag), right_whole, wrong_whole),
    ]


def judge_records(pair: Pair, stage: Stage | None, index: int) -> tuple[list[dict], list[dict]]:
    """The pair as judge turns, in both orders: (logprob form, generative form)."""
    logprob, generative = [], []
    for order, (first, second) in enumerate(((pair.right, pair.wrong), (pair.wrong, pair.right))):
        target = "1" if order == 0 else "2"
        turns = to_turns(pair.context.messages(judge_question(stage, first, second)))
        record_id = f"{pair.record['id']}-judge-{pair.stage_name}-{index}-{order}"
        base = {
            "id": record_id,
            "image": pair.record.get("image"),
            "kind": "judge",
            "stage": pair.stage_name,
        }
        logprob.append({**base, "conversations": [*turns, {"from": "gpt", "value": target}]})
        verdict = f"Since response {target} {REASONS[pair.stage_name]}, I choose response {target}."
        generative.append(
            {**base, "id": f"{record_id}-g", "conversations": [*turns, {"from": "gpt", "value": verdict}]}
        )
    return logprob, generative


async def collect_candidates(
    engine: Engine,
    records: Sequence[dict],
    config: SearchConfig,
    *,
    concurrency: int = 16,
    whole_answers: bool = True,
    progress: bool = True,
) -> list[Labelled]:
    """Run each record through stage search (and best-of-N) at `config`'s settings; label every
    candidate the search judged."""
    from tqdm import tqdm

    limit = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(records), desc="judge-data", unit="scene", disable=not progress)

    async def one(record: dict) -> list[Labelled]:
        question = question_messages(record)
        # The conversation as the search's judge sees it: with the stage instruction, when the search
        # adds one (the search is given the question itself, and adds it again on its own).
        judged = SearchJob(engine, question, config, job_id="judge-data").messages
        async with limit:
            staged = await run_search(engine, question, config.with_(strategy="stage"))
            found = stage_candidates(record, judged, staged, config.stages)
            if whole_answers:
                whole = await run_search(engine, question, config.with_(strategy="best_of_n"))
                found += whole_answer_candidates(record, judged, whole, config.stages)
        bar.update(1)
        return found

    try:
        results = await asyncio.gather(*(one(r) for r in records))
    finally:
        bar.close()
    return [c for found in results for c in found]


def write_judge_data(
    out: str | Path,
    pairs: Sequence[Pair],
    stages: StageSet,
    *,
    name: str = "judge",
    max_pairs_per_stage_step: int = 2,
    seed: int = 0,
) -> dict:
    """Write NAME.jsonl and NAME_generative.jsonl; returns counts by stage.

    A step with many right and many wrong candidates makes many pairs of near-identical texts:
    at most `max_pairs_per_stage_step` pairs per record and stage are kept, drawn at random."""
    out = Path(out)
    rng = random.Random(seed)
    by_step: dict[tuple[str, str], list[Pair]] = {}
    for pair in pairs:
        by_step.setdefault((pair.record["id"], pair.stage_name), []).append(pair)
    kept = [p for group in by_step.values() for p in rng.sample(group, min(len(group), max_pairs_per_stage_step))]
    rng.shuffle(kept)
    stage_of = {s.name: s for s in stages}
    counts: Counter = Counter()
    with (
        open(out / f"{name}.jsonl", "w") as logprob_file,
        open(out / f"{name}_generative.jsonl", "w") as generative_file,
    ):
        for index, pair in enumerate(kept):
            logprob, generative = judge_records(pair, stage_of.get(pair.stage_name), index)
            for record in logprob:
                logprob_file.write(json.dumps(record) + "\n")
            for record in generative:
                generative_file.write(json.dumps(record) + "\n")
            counts[pair.stage_name] += 2
    return dict(sorted(counts.items()))


def write_counterfactual(folder: Path, *, seed: int, stages: StageSet | None = None) -> dict:
    """Counterfactual judge turns for the scenes of FOLDER/train.jsonl, into
    FOLDER/judge_counterfactual.jsonl (and its generative form); returns counts by stage."""
    stages = stages or StageSet.from_names()
    rng = random.Random(seed)
    records = read_questions(folder / "train.jsonl")
    pairs = [p for r in records for p in counterfactual_pairs(r, question_messages(r), stages, rng)]
    return write_judge_data(folder, pairs, stages, name="judge_counterfactual", seed=seed)


def keep_stages(path: Path, stages: Sequence[str]) -> Path:
    """A copy of a judge file with only the given stages' turns, beside it (PATH-STAGE.jsonl)."""
    kept = path.with_name(f"{path.stem}-{'-'.join(stages)}.jsonl")
    with open(path) as source, open(kept, "w") as target:
        for line in source:
            if json.loads(line)["stage"] in stages:
                target.write(line)
    return kept
