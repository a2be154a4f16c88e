"""What a search trace says beyond its answer, scored against the record: whether any candidate
for the final answer was right (the oracle, pass@N), how the verifier did between one right and one
wrong candidate (its pairwise accuracy, per stage: the matches it played, or for pointwise scores
every such pair it scored in one stage), and each scored candidate's score and label (for AUC)."""

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
    """(stage, the verifier preferred the right one) for every match between a right and a wrong
    candidate, and for pointwise scores every right-wrong pair of scored candidates of one stage (a
    tie counts as wrong). Stage search and swires: per stage (candidates labelled against the
    record's own stages); whole answers: stage "answer". Sentence steps are partial stages, which
    have no label."""
    outcomes: list[tuple[str, bool]] = []
    for name, matches, scores, right in _labelled(labeler, trace):
        outcomes += [(name, right[m["winner"]]) for m in matches if right[m["pair"][0]] != right[m["pair"][1]]]
        outcomes += [
            (name, good > bad)
            for good in (s["score"] for s in scores if right[s["index"]])
            for bad in (s["score"] for s in scores if not right[s["index"]])
        ]
    return outcomes


def scored_labels(labeler: StageLabeler, trace: dict) -> list[tuple[str, float, bool]]:
    """(stage, score, right) for every candidate the pointwise verifier scored."""
    return [
        (name, s["score"], right[s["index"]]) for name, _, scores, right in _labelled(labeler, trace) for s in scores
    ]


def _labelled(labeler: StageLabeler, trace: dict):
    """(stage name, its matches, its scores, candidate index -> right) for each labelled stage."""
    for step in trace["answer_steps"]:
        right = {c["index"]: labeler.whole_answer_is_right(c["text"]) for c in step["candidates"]}
        yield WHOLE_ANSWER, step["matches"], step.get("scores", []), right
    if trace["strategy"] == "sentence":
        return
    for index, stage in enumerate(trace["stages"]):
        one_step = len(stage.get("steps", [])) == 1
        if not labeler.has_reference(index) or not (one_step or stage.get("scores")):
            continue
        right = {c["index"]: labeler.is_right(index, c["text"]) for c in stage["candidates"]}
        yield stage["name"], stage["matches"] if one_step else [], stage.get("scores", []), right
