"""What a client asks of the answer beyond how it is searched: sampling controls for every candidate
(penalties, top-k, min-p, logit bias), and for the final stage alone stop strings, per-token
log-probabilities and a JSON format. The stage tags are the search's own, so stop strings and the
JSON format never apply to the reasoning stages."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from models.engine import SamplingControls, SamplingSettings, TokenLogprob

# The strategies that sample the final stage as one piece, so that a format or log-probabilities
# can be applied to it; the others write whole answers or build the stage sentence by sentence.
ONE_PIECE_FINAL = ("stage", "swires", "none")


@dataclass(frozen=True)
class AnswerOptions:
    controls: SamplingControls = field(default_factory=SamplingControls)  # every candidate's
    stop: tuple[str, ...] = ()  # on the final stage
    logprobs: int | None = None  # the final stage's, with this many alternatives per token
    json_schema: dict | None = None  # the final stage is JSON matching it ({}: any JSON object)

    def needs_one_piece_final(self) -> bool:
        return self.logprobs is not None or self.json_schema is not None

    def apply(self, settings: SamplingSettings, final: bool) -> SamplingSettings:
        """Engine settings for a candidate; `final` when it is (a piece of) the final stage."""
        if not final:
            return replace(settings, controls=self.controls)
        return replace(
            settings,
            controls=self.controls,
            stop=settings.stop + self.stop,
            token_logprobs=self.logprobs,
            json_schema=self.json_schema,
        )

    def cut(self, final_text: str) -> str:
        """A final stage written as part of a whole answer, cut before its first stop string."""
        ends = [i for i in (final_text.find(s) for s in self.stop) if i >= 0]
        return final_text[: min(ends)] if ends else final_text


def logprobs_of_text(logprobs: tuple[TokenLogprob, ...] | None, text: str) -> list[TokenLogprob] | None:
    """The tokens that spell `text` (a candidate's text, cut where the search cut it): tokens are
    kept while they start inside it, so a closing tag or stop string sampled after it is left out."""
    if logprobs is None:
        return None
    kept, length = [], 0
    for token in logprobs:
        if length >= len(text):
            break
        kept.append(token)
        length += len(token.token)
    return kept
