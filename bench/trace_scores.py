"""What a search trace says beyond its answer, scored against the record: whether any candidate
for the final answer was right (the oracle, pass@N), and how the judge did in the matches it
played between one right and one wrong candidate (its pairwise accuracy, per stage)."""

from __future__ import annotations

from training.labels import WHOLE_ANSWER, StageLabeler


def oracle_right(labeler: StageLabeler, trace: dict) -> bool | None:
    """Any candidate of the final answer right: one of the N whole answers (best-of-N, majority),
    one of the N conclusions after the chosen stages (stage), the one answer (a single sample).
    None for the sentence strategy: its candidates are sentences, not answers."""
    if trace["answer_steps"]:
        return any(
            labeler.whole_answer_is_right(c["text"]) for step in trace["answer_steps"] for c in step["candidates"]
        )
    last = trace["stages"][-1]
    if trace["strategy"] == "sentence" and trace["beam_width"] > 1:
        return None
    if not last["candidates"]:
        return labeler.is_right(len(trace["stages"]) - 1, last["text"])
    return any(labeler.is_right(len(trace["stages"]) - 1, c["text"]) for c in last["candidates"])


def judge_outcomes(labeler: StageLabeler, trace: dict) -> list[tuple[str, bool]]:
    """(stage, the judge picked the right one) for every match between a right and a wrong
    candidate. Stage search: per stage (candidates labelled against the record's own stages);
    whole answers: stage "answer". Sentence steps are partial stages, which have no label."""
    outcomes: list[tuple[str, bool]] = []
    for step in trace["answer_steps"]:
        right = {c["index"]: labeler.whole_answer_is_right(c["text"]) for c in step["candidates"]}
        outcomes += _outcomes(WHOLE_ANSWER, step["matches"], right)
    if trace["strategy"] == "sentence":
        return outcomes
    for index, stage in enumerate(trace["stages"]):
        if len(stage.get("steps", [])) != 1 or not labeler.has_reference(index):
            continue
        right = {c["index"]: labeler.is_right(index, c["text"]) for c in stage["candidates"]}
        outcomes += _outcomes(stage["name"], stage["matches"], right)
    return outcomes


def _outcomes(name: str, matches: list[dict], right: dict[int, bool]) -> list[tuple[str, bool]]:
    return [(name, right[m["winner"]]) for m in matches if right[m["pair"][0]] != right[m["pair"][1]]]
