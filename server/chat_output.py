"""How a search's stages become OpenAI message fields, whole (a response) or piece by piece (SSE).

- "split" (default): the reasoning stages, each in its tags with its text trimmed, go to
  `reasoning_content`; the conclusion's text, trimmed, is `content`.
- "tagged": the whole answer, tags included, exactly as the search assembled it, is `content`.
Streamed pieces, joined, equal the whole: the same rules run in both paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from server.schemas import ChoiceLogprobs, ChunkDelta, ResponseMessage, TokenLogprobInfo, TopLogprob
from stage_search.events import SearchEvent, StageDecided, StageDelta, StageStarted
from stage_search.stages import STAGE_SEPARATOR, StageSet
from stage_search.trace import SearchResult

MessageField = Literal["content", "reasoning_content"]


@dataclass(frozen=True)
class Piece:
    """Text for one message field, belonging to one stage."""

    field: MessageField
    text: str
    stage: str


def whole_message(result: SearchResult, stages: StageSet, output: str) -> ResponseMessage:
    writer = StageTextWriter(stages, output)
    fields: dict[str, str] = {"content": "", "reasoning_content": ""}
    for stage in stages:
        for event in (
            StageStarted(stage.name, stage.index),
            StageDecided(stage.name, stage.index, result.stage_text(stage.name)),
        ):
            for piece in writer.pieces(event):
                fields[piece.field] += piece.text
    reasoning = fields["reasoning_content"] or None
    return ResponseMessage(content=fields["content"], reasoning_content=reasoning, reasoning=reasoning)


def delta_of(piece: Piece) -> ChunkDelta:
    """A stream delta carrying one piece; reasoning goes under both of its names."""
    if piece.field == "content":
        return ChunkDelta(stage=piece.stage, content=piece.text)
    return ChunkDelta(stage=piece.stage, reasoning_content=piece.text, reasoning=piece.text)


def choice_logprobs(result: SearchResult) -> ChoiceLogprobs | None:
    """OpenAI's `logprobs.content`: the final stage's tokens, each with its top alternatives."""
    if result.answer_logprobs is None:
        return None

    def info(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return ChoiceLogprobs(
        content=[
            TokenLogprobInfo(**info(t.token, t.logprob), top_logprobs=[TopLogprob(**info(*alt)) for alt in t.top])
            for t in result.answer_logprobs
        ]
    )


class StageTextWriter:
    """Turns search events into message-field pieces; each stage's text is never taken back."""

    def __init__(self, stages: StageSet, output: str):
        self._stages = stages
        self._tagged = output == "tagged"
        self._raw: dict[str, str] = {}
        self._shown: dict[str, int] = {}

    def _field(self, index: int) -> MessageField:
        return "content" if self._tagged or index == len(self._stages) - 1 else "reasoning_content"

    def _visible(self, raw: str) -> str:
        # Trimmed text: holding back trailing whitespace keeps every streamed prefix final.
        return raw if self._tagged else raw.strip()

    def pieces(self, event: SearchEvent) -> list[Piece]:
        if isinstance(event, StageStarted):
            stage = self._stages.stages[event.index]
            self._raw[stage.name], self._shown[stage.name] = "", 0
            if self._field(event.index) == "content" and not self._tagged:
                return []
            lead = STAGE_SEPARATOR if event.index > 0 else ""
            return [Piece(self._field(event.index), lead + stage.open_tag, stage.name)]
        if isinstance(event, (StageDelta, StageDecided)):
            stage = self._stages.stages[event.index]
            if isinstance(event, StageDelta):
                self._raw[stage.name] += event.text
            else:
                self._raw[stage.name] = event.text
            visible = self._visible(self._raw[stage.name])
            new = visible[self._shown[stage.name] :]
            self._shown[stage.name] = len(visible)
            out = [Piece(self._field(event.index), new, stage.name)] if new else []
            closes = isinstance(event, StageDecided) and (self._tagged or self._field(event.index) != "content")
            if closes:
                out.append(Piece(self._field(event.index), stage.close_tag, stage.name))
            return out
        return []
