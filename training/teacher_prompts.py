"""What `annotate` asks a teacher model, in our own words after the paper's procedure: given the
image, the question and the known answer, write the answer out in the four stages; and, for answers
no rule can compare, whether a conclusion says the same as the known answer.

Each builder returns an OpenAI chat completion body without `model` and sampling fields; the
caller adds those.
"""

from __future__ import annotations

from stage_search.stages import StageSet

_STAGE_GUIDE = (
    "one or two sentences on how you will go about the question; do not answer it yet",
    "what the image shows that bears on the question, described accurately and without general remarks",
    "the steps that lead from what the image shows to the answer, one after another, with any counting "
    "or arithmetic written out",
    "{conclusion}",
)
_LETTER_CONCLUSION = "the letter of the correct option alone, for example: B"
_TEXT_CONCLUSION = "the final answer, stated directly and as briefly as the known answer"


def annotation_system_prompt(stages: StageSet, multiple_choice: bool) -> str:
    conclusion = _LETTER_CONCLUSION if multiple_choice else _TEXT_CONCLUSION
    parts = "\n".join(
        f"{stage.open_tag}...{stage.close_tag}: {guide.format(conclusion=conclusion)}"
        for stage, guide in zip(stages, _STAGE_GUIDE, strict=True)
    )
    return (
        "You write worked answers to questions about images, for training a model that thinks in stages. "
        "You are told the correct answer. Write the answer out in exactly these four parts, in this order, "
        "each inside its tags, and nothing before or after them:\n"
        f"{parts}\n"
        "The reasoning has to reach the given answer from what the image shows. Do not mention that the "
        "answer was given to you, and do not refuse."
    )


# How the teacher is asked: told the known answer and the format (the paper's way), or asked the
# record's question as it stands, for a teacher that already answers in the four stages (a LLaVA-o1
# model); the known answer then only checks the result.
PROMPT_STYLES = ("answer-given", "question-only")


def annotation_body(
    stages: StageSet, question: str, answer: str, image_url: str | None, multiple_choice: bool, style: str
) -> dict:
    """Ask for the four stages of one record. `answer` is the option letter for multiple choice."""
    content: list[dict] = [{"type": "image_url", "image_url": {"url": image_url}}] if image_url else []
    if style == "question-only":
        content.append({"type": "text", "text": question})
        return {"messages": [{"role": "user", "content": content}]}
    content.append({"type": "text", "text": f"Question: {question}\n\nCorrect answer: {answer}"})
    return {
        "messages": [
            {"role": "system", "content": annotation_system_prompt(stages, multiple_choice)},
            {"role": "user", "content": content},
        ]
    }


def agreement_body(question: str, answer: str, conclusion: str) -> dict:
    """Ask whether a conclusion gives the known answer (text only: the image is not needed to compare)."""
    text = (
        "Two answers to the same question follow. Do they give the same answer, in substance? Wording, "
        "units and detail may differ. Reply with one word: yes or no.\n\n"
        f"Question: {question}\nKnown answer: {answer}\nProposed answer: {conclusion}"
    )
    return {"messages": [{"role": "user", "content": text}]}
