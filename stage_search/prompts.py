"""The words the search adds to prompts: the stage instruction, the pairwise judge's question and
the pointwise verifier's."""

from __future__ import annotations

import re

from stage_search.stages import Stage, StageSet

# Model names (lower case) known to answer in the four stages without being told.
_STAGE_TRAINED = ("llava-cot", "llava-o1", "llama-3.2v-11b-cot")


def is_stage_trained(model_name: str) -> bool:
    name = model_name.lower()
    return any(marker in name for marker in _STAGE_TRAINED)


def stage_instruction(stages: StageSet) -> str:
    """Asks a model not trained on the format to answer in the four tagged stages."""
    s = stages.stages
    return (
        "Answer in four stages, each inside its tags and in this order: "
        f"{s[0].open_tag} how you will approach the question {s[0].close_tag}, "
        f"{s[1].open_tag} what in the image matters for the question {s[1].close_tag}, "
        f"{s[2].open_tag} step-by-step reasoning toward the answer {s[2].close_tag}, "
        f"{s[3].open_tag} the final answer only (for multiple choice, the option) {s[3].close_tag}."
    )


def judge_question(stage: Stage | None, first: str, second: str) -> str:
    """The judge's turn, after the conversation and the answer so far: which continuation is better.

    The part that is the same for every match of a stage comes first, so the engine's prefix cache
    holds it; only the two candidates and a short cue are new tokens per match.
    `stage` None means whole answers are compared (best-of-N).
    """
    if stage is None:
        what, criteria = "answers", WHOLE_ANSWER_CRITERIA
    else:
        what, criteria = f"{stage.name} sections continuing the answer above", stage.criteria
    return (
        f"Compare two candidate {what}. A better one is one where {criteria}. "
        'Say which is better: answer 1 or 2, or explain and end with "I choose response 1" or '
        '"I choose response 2".\n\n'
        f"Response 1:\n{first.strip()}\n\nResponse 2:\n{second.strip()}\n\nThe better response is"
    )


WHOLE_ANSWER_CRITERIA = "it reasons correctly from the image and ends in a correct, direct answer"


def verify_question(stage: Stage | None, candidate: str = "", picked: tuple[str, str] | None = None) -> str:
    """The pointwise verifier's turn, after the conversation and the answer so far: is this
    candidate (last, in its tags as the model wrote it) right? Answered with one token, "yes" or
    "no". The question comes first, so a step's candidates share all of the prompt but their own
    text, and the verdict follows the candidate it is about. `stage` None: a whole answer.
    `picked`: the multiple-choice option (letter, text) the candidate's final answer picks, quoted
    after it (stage_search/choices.py says why)."""
    if stage is None:
        what, criteria = "this answer", WHOLE_ANSWER_CRITERIA
    else:
        what, criteria = f"this {stage.name} section, continuing the answer above,", stage.criteria
    return (
        f"Is {what} right? A right one is one where {criteria}. Answer yes or no.\n\n{candidate}{quoted_option(picked)}"
    )


def quoted_option(picked: tuple[str, str] | None) -> str:
    """What follows a candidate whose final answer picks a multiple-choice option (letter, text)."""
    return f"\n(option {picked[0]}: {picked[1]})" if picked is not None else ""


def error_check_question(stage: Stage, candidate: str) -> str:
    """The published procedure's extra question in the reasoning stage, once per candidate."""
    return (
        f"Check this {stage.name} section, continuing the answer above, for mistakes in its logic or "
        f"calculations. Say whether it has an error and where.\n\n{candidate.strip()}"
    )


_VERDICT = re.compile(r"choose\s+(?:response\s*)?#?\s*([12])\b", re.IGNORECASE)
_FALLBACK = re.compile(r"\bresponse\s*#?\s*([12])\b.{0,40}\b(?:is\s+)?better\b|\b([12])\b\s*$", re.IGNORECASE)


def parse_verdict(text: str) -> int | None:
    """Slot (0 or 1) a free-text verdict chose, or None when it says nothing clear.

    Takes the last "choose response N" (models sometimes restate the options first), then
    "response N is better", then a bare trailing 1 or 2.
    """
    choices = _VERDICT.findall(text)
    if choices:
        return int(choices[-1]) - 1
    fallback = _FALLBACK.findall(text)
    if fallback:
        number = next(n for n in fallback[-1] if n)
        return int(number) - 1
    return None
