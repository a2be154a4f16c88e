"""The stage text writer: search events become message-field pieces, the same whole or streamed."""

from __future__ import annotations

import pytest

from server.chat_output import StageTextWriter, whole_message
from stage_search.events import StageDecided, StageDelta, StageStarted
from stage_search.stages import StageSet
from stage_search.trace import SearchResult, StageTrace, Usage

STAGE_SET = StageSet.from_names()
BODIES = {
    "SUMMARY": " I will count. ",
    "CAPTION": "Two red squares.\n",
    "REASONING": "  2 squares. ",
    "CONCLUSION": " The answer is 2. ",
}


def result() -> SearchResult:
    stages = [StageTrace(name, body) for name, body in BODIES.items()]
    return SearchResult("stage", 2, "", BODIES["CONCLUSION"], stages, Usage(), 0.0)


def streamed(output: str, split_into: int = 1) -> list[tuple[str, str, str]]:
    """(field, text, stage) of every piece, each stage's body arriving in `split_into` deltas first."""
    writer, pieces = StageTextWriter(STAGE_SET, output), []
    for stage in STAGE_SET:
        body = BODIES[stage.name]
        events = [StageStarted(stage.name, stage.index)]
        if split_into > 1:
            step = max(1, len(body) // split_into)
            events += [StageDelta(stage.name, stage.index, body[i : i + step]) for i in range(0, len(body), step)]
        events.append(StageDecided(stage.name, stage.index, body))
        for event in events:
            pieces += [(p.field, p.text, p.stage) for p in writer.pieces(event)]
    return pieces


def joined(pieces, field: str) -> str:
    return "".join(text for f, text, _ in pieces if f == field)


def test_split_output_puts_trimmed_tagged_reasoning_stages_aside_and_the_conclusion_in_content():
    pieces = streamed("split")
    assert joined(pieces, "reasoning_content") == (
        "<SUMMARY>I will count.</SUMMARY>\n\n<CAPTION>Two red squares.</CAPTION>\n\n<REASONING>2 squares.</REASONING>"
    )
    assert joined(pieces, "content") == "The answer is 2."
    assert {stage for f, _, stage in pieces if f == "content"} == {"CONCLUSION"}


def test_tagged_output_is_the_whole_answer_in_content_untrimmed():
    pieces = streamed("tagged")
    assert joined(pieces, "reasoning_content") == ""
    assert joined(pieces, "content") == STAGE_SET.render(BODIES)


@pytest.mark.parametrize("output", ["split", "tagged"])
@pytest.mark.parametrize("split_into", [1, 3, 50])
def test_streamed_pieces_join_into_the_whole_message(output, split_into):
    pieces = streamed(output, split_into)
    message = whole_message(result(), STAGE_SET, output)
    assert joined(pieces, "content") == message.content
    assert (joined(pieces, "reasoning_content") or None) == message.reasoning_content


def test_text_already_sent_is_never_taken_back_and_trailing_space_waits():
    writer = StageTextWriter(STAGE_SET, "split")
    writer.pieces(StageStarted("SUMMARY", 0))
    first = writer.pieces(StageDelta("SUMMARY", 0, " Hello "))
    second = writer.pieces(StageDelta("SUMMARY", 0, "world "))
    last = writer.pieces(StageDecided("SUMMARY", 0, " Hello world "))
    assert [p.text for p in first] == ["Hello"]  # the space may still be trailing: held back
    assert [p.text for p in second] == [" world"]
    assert [p.text for p in last] == ["</SUMMARY>"]  # nothing new, then the closing tag
