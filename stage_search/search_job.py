"""One search job: the question, the engine, the judge, and the branching step strategies share."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.engine import (
    Candidate,
    ChatMessage,
    ChatPart,
    Engine,
    EngineError,
    SamplingSettings,
    StreamDelta,
    TokenLogprob,
)
from stage_search.answer_options import logprobs_of_text
from stage_search.context_room import MIN_JUDGED_TOKENS, as_judged, byte_bound, judge_share, stage_room
from stage_search.events import SearchEvent, StageDecided, StageDelta, StageStarted
from stage_search.judge import Contender, JudgeContext, PairwiseJudge
from stage_search.pointwise import PointwiseVerifier, best
from stage_search.prompts import is_stage_trained, judge_question, stage_instruction, verify_question
from stage_search.stages import Stage
from stage_search.tournament import run_tournament
from stage_search.trace import (
    AnswerFinish,
    CandidateTrace,
    ScoreTrace,
    SearchResult,
    StageTrace,
    StepTrace,
    Usage,
)

if TYPE_CHECKING:  # at run time config imports the strategies, which import this module
    from stage_search.config import SearchConfig

Emit = Callable[[SearchEvent], None]


@dataclass(frozen=True)
class Sampled:
    """One engine call's candidates: raw, traced, and the distinct ones the judge may compare."""

    candidates: Sequence[Candidate]
    step: StepTrace
    contenders: list[Contender]


@dataclass(frozen=True)
class Branch:
    """The outcome of one branching step: the winner, cleaned and raw, and the step's trace."""

    text: str
    candidate: Candidate
    step: StepTrace


class SearchJob:
    """State of one question's search; strategies call `branch` and read the settings from here."""

    def __init__(
        self,
        engine: Engine,
        messages: Sequence[ChatMessage],
        config: SearchConfig,
        *,
        job_id: str,
        emit: Emit | None = None,
    ):
        if not any(m.role == "user" for m in messages):
            raise ValueError("the conversation needs a user message")
        self.engine = engine
        self.config = config
        self.job_id = job_id
        self.stages = config.stages
        self.usage = Usage()
        self.accepted_tokens = 0  # tokens of the winners kept so far (the answer's length)
        self.answer_logprobs: list[TokenLogprob] | None = None  # the final stage's, when asked
        # The latest prompt the engine sampled from, and its tokens as the engine counted them.
        self._seen: tuple[str, int] | None = None
        # What the engine adds to the tokenizer's count of a prompt (special tokens, image tokens):
        # the same for every prompt of this conversation, so learned once, when first needed.
        self._engine_added: int | None = None
        self.out_of_context = False  # a stage was left short because the context was full
        self.retraces = 0  # swires: times it went back to sample new captions
        self.started = time.perf_counter()
        self._emit = emit or (lambda event: None)
        self._seeds = itertools.count(config.seed) if config.seed is not None else None
        self.messages = self._with_stage_instruction(list(messages))
        judge_engine = engine.judge_engine()
        self.verifier = "self" if judge_engine is engine else judge_engine.model_name
        self.verifier_form = config.resolved_verifier_form(separate_verifier=judge_engine is not engine)
        self.judge = PairwiseJudge(
            judge_engine,
            mode=config.judge,
            debias=config.debias,
            job_id=job_id,
            max_tokens=config.judge_max_tokens,
        )
        self.scorer = PointwiseVerifier(judge_engine, job_id=job_id)

    def _with_stage_instruction(self, messages: list[ChatMessage]) -> list[ChatMessage]:
        wanted = self.config.stage_prompt == "always" or (
            self.config.stage_prompt == "auto" and not is_stage_trained(self.engine.model_name)
        )
        if not wanted:
            return messages
        # Added to the first user message rather than as a system turn: not every template has one.
        first = next(i for i, m in enumerate(messages) if m.role == "user")
        content = messages[first].content
        parts = (ChatPart.of_text(content),) if isinstance(content, str) else content
        messages[first] = ChatMessage("user", (*parts, ChatPart.of_text(stage_instruction(self.stages))))
        return messages

    def emit(self, event: SearchEvent) -> None:
        self._emit(event)

    def next_seed(self) -> int | None:
        return next(self._seeds) if self._seeds is not None else None

    def is_final(self, stage_index: int) -> bool:
        """Whether a step of this stage samples (a piece of) the final stage. Whole answers are
        sampled as stage 0: the client's stop strings and format never cut their reasoning."""
        return stage_index == len(self.stages) - 1

    def candidate_settings(self, n: int, max_tokens: int, stop: tuple[str, ...], stage_index: int) -> SamplingSettings:
        settings = SamplingSettings(
            n=n,
            max_tokens=max_tokens,
            temperature=self.config.sampling_temperature,
            top_p=self.config.top_p,
            seed=self.next_seed(),
            stop=stop,
        )
        return self.config.answer.apply(settings, final=self.is_final(stage_index))

    def priority(self, stage_index: int, judging: bool = False) -> int:
        """Lower runs first: later stages, and judging before more sampling, finish requests sooner."""
        return (len(self.stages) - stage_index) * 2 - (1 if judging else 0)

    def budget_limit(self, stage_index: int, accepted_tokens: int | None = None) -> int:
        """Tokens a step of this stage may sample by the request's limits: the stage limit, within
        what the answer has left after keeping one token for each later stage. `accepted_tokens`:
        the answer's length so far on the step's path, when it is not the kept winners'."""
        later_stages = len(self.stages) - stage_index - 1
        accepted = self.accepted_tokens if accepted_tokens is None else accepted_tokens
        left = self.config.total_token_budget - accepted - later_stages
        return max(1, min(self.config.max_tokens_per_stage, left))

    async def token_limit(
        self, stage_index: int, prefix: str, judged: bool = False, accepted_tokens: int | None = None
    ) -> int:
        """The budget limit of a step continuing the assistant's `prefix`, within the context's room
        (see `_within_context`). Below 1 when the context is full."""
        later_stages = len(self.stages) - stage_index - 1
        question = self.verdict_question(self.stages.stages[stage_index]) if judged else None
        budget = self.budget_limit(stage_index, accepted_tokens)
        return await self._within_context(budget, prefix, later_stages, question)

    async def answer_token_limit(self) -> int:
        """Tokens a whole answer (every stage in one sample, after the first stage's opening tag)
        may take; several are judged whole against each other."""
        question = self.verdict_question(None) if self.config.beam_width > 1 else None
        prefix = self.stages.stages[0].open_tag
        return await self._within_context(self.config.total_token_budget, prefix, 0, question)

    async def _within_context(self, limit: int, prefix: str, later_stages: int, question: str | None) -> int:
        """`limit`, cut to what the context has room for: the later stages must still fit, and when
        the step's candidates are judged (`question` is the judge's), two must fit in its prompt."""
        context_limit = self.engine.max_model_len or 0  # 0: not known (a remote engine may not say)
        if context_limit <= 0:
            return limit

        # A judged search keeps room for the verifier's question at the end of every later step too.
        kept_for_verdict = byte_bound(question) if question is not None else 0

        def room(used: int) -> int:
            tokens = stage_room(context_limit - kept_for_verdict, used, later_stages)
            share = self._judge_share(used, question) if question is not None else None
            return min(tokens, share) if share is not None and share >= MIN_JUDGED_TOKENS else tokens

        text = self.engine.render(self.messages, prefix).text
        if self._seen is None:
            # The first step: an over-long prompt is the engine's to refuse, so at least 1. Its
            # images' tokens are not known until the engine has seen them.
            used = byte_bound(text)
            if room(used) < limit:
                used = await self.engine.count_tokens(text)
            return max(1, min(limit, room(used)))
        # Later prompts extend the one the engine last counted: its count plus the new text's
        # bytes bounds theirs; near the context's end, the tokenizer counts exactly.
        seen_text, seen_tokens = self._seen
        used = seen_tokens + byte_bound(text) - byte_bound(seen_text)
        if room(used) < limit:
            if self._engine_added is None:
                self._engine_added = seen_tokens - await self.engine.count_tokens(seen_text)
            used = await self.engine.count_tokens(text) + self._engine_added
        return min(limit, room(used))

    def verdict_question(self, stage: Stage | None) -> str:
        """The text the verifier's prompt adds around the candidates (as sized; empty candidates)."""
        return verify_question(stage) if self.verifier_form == "pointwise" else judge_question(stage, "", "")

    def _judge_share(self, prompt_tokens: int, question: str) -> int | None:
        """Tokens of each candidate the verifier can read beside a step prompt of this size: two to
        a pairwise match, one to a pointwise score."""
        pairwise = self.verifier_form == "pairwise"
        verdict_tokens = self.config.judge_max_tokens if pairwise and self.config.judge == "generative" else 1
        return judge_share(
            self.engine.judge_engine().max_model_len or 0,
            prompt_tokens,
            question,
            verdict_tokens,
            candidates=2 if pairwise else 1,
        )

    def judge_context(self, accepted: str, stage: Stage | None) -> JudgeContext:
        """What the verifier reads besides the candidates: the conversation and the answer so far."""
        return JudgeContext(tuple(self.messages), accepted, stage, whole_opening=self.stages.stages[0].open_tag)

    async def branch(
        self,
        assistant_prefix: str,
        *,
        n: int,
        max_tokens: int,
        stop: tuple[str, ...],
        clean: Callable[[Candidate], str],
        accepted: str,
        stage: Stage | None,
        stage_index: int,
    ) -> Branch:
        """Sample n continuations of the assistant prefix in one engine call; keep the judge's pick."""
        sampled = await self.sample(
            assistant_prefix, n=n, max_tokens=max_tokens, stop=stop, clean=clean, stage_index=stage_index
        )
        return await self.pick(sampled, sampled.contenders, accepted=accepted, stage=stage, stage_index=stage_index)

    async def sample(
        self,
        assistant_prefix: str,
        *,
        n: int,
        max_tokens: int,
        stop: tuple[str, ...],
        clean: Callable[[Candidate], str],
        stage_index: int,
        first_index: int = 0,
        extends_last_prompt: bool = True,
    ) -> Sampled:
        """n continuations in one engine call, traced. `clean` turns a raw candidate into the text
        that would be accepted; identical cleaned texts are merged, so equal candidates cost no
        comparison. Candidates are numbered from `first_index` (swires numbers a stage's candidates
        across its steps). Context sizing bounds a prompt by the last one sampled, which it must
        extend: a step on a path beside others (swires) passes `extends_last_prompt=False` so that
        its prompt is not taken as the one the others extend."""
        prompt = self.engine.render(self.messages, assistant_prefix)
        settings = self.candidate_settings(n, max_tokens, stop, stage_index)
        generation = await self.engine.generate(
            prompt, settings, job_id=self.job_id, priority=self.priority(stage_index)
        )
        step = StepTrace(prompt_tokens=generation.prompt_tokens, cached_tokens=generation.cached_tokens)
        if extends_last_prompt:
            self._seen = (prompt.text, generation.prompt_tokens)
        self.usage.prompt_tokens += generation.prompt_tokens
        self.usage.cached_tokens += generation.cached_tokens
        first_of_text: dict[str, int] = {}
        contenders: list[Contender] = []
        for index, candidate in enumerate(generation.candidates, start=first_index):
            text = clean(candidate)
            merged = first_of_text.get(text)
            if merged is None:
                first_of_text[text] = index
                contenders.append(Contender(index, text))
            step.candidates.append(CandidateTrace(index, text, candidate.num_tokens, candidate.finish_reason, merged))
            self.usage.completion_tokens += candidate.num_tokens
        return Sampled(generation.candidates, step, contenders)

    async def pick(
        self,
        sampled: Sampled,
        contenders: Sequence[Contender],
        *,
        accepted: str,
        stage: Stage | None,
        stage_index: int,
    ) -> Branch:
        """The verifier's pick among `contenders` (some or all of the sampled ones): the best score
        (pointwise), or the winner of a tournament of matches (pairwise)."""
        step = sampled.step
        if len(contenders) < 2:  # nothing to compare
            step.winner = contenders[0].index
        elif self.verifier_form == "pointwise":
            scores = await self.score(step, contenders, accepted=accepted, stage=stage, stage_index=stage_index)
            step.winner = best(scores).index if scores else contenders[0].index
        else:
            await self._play_tournament(step, contenders, accepted=accepted, stage=stage, stage_index=stage_index)
        chosen = sampled.candidates[step.winner]
        self.accepted_tokens += chosen.num_tokens
        text = next(c.text for c in contenders if c.index == step.winner)  # whole, as sampled
        self.keep_answer_logprobs(chosen, text, stage_index)
        return Branch(text, chosen, step)

    async def _play_tournament(
        self, step: StepTrace, contenders: Sequence[Contender], *, accepted: str, stage: Stage | None, stage_index: int
    ) -> None:
        context = self.judge_context(accepted, stage)
        judge_priority = self.priority(stage_index, judging=True)

        async def play(a: Contender, b: Contender, round_: int):
            return await self.judge.compare(context, a, b, round_, priority=judge_priority)

        judged = await self._as_judged(step, contenders, stage)
        if judged is None:  # the judge could not read them beside the conversation: the first stays
            step.winner = contenders[0].index
            return
        result = await run_tournament(judged, play)
        step.matches = list(result.matches)
        step.winner, step.rounds = result.winner.index, result.rounds
        self.usage.judge_tokens += sum(m.judge_tokens for m in step.matches)
        self.usage.judge_calls += sum(m.judge_calls for m in step.matches)

    async def score(
        self, step: StepTrace, contenders: Sequence[Contender], *, accepted: str, stage: Stage | None, stage_index: int
    ) -> list[ScoreTrace]:
        """The pointwise verifier's score of each contender, concurrently, recorded in the step (in
        the contenders' order). None are scored when too little of them fits the verifier's context
        beside the conversation (the step's trace then says so)."""
        judged = await self._as_judged(step, contenders, stage)
        if judged is None:
            return []
        priority = self.priority(stage_index, judging=True)
        scores = await self.scorer.score_all(self.judge_context(accepted, stage), judged, priority)
        step.scores.extend(scores)
        self.usage.judge_tokens += sum(s.judge_tokens for s in scores)
        self.usage.judge_calls += len(scores)
        return scores

    async def _as_judged(
        self, step: StepTrace, contenders: Sequence[Contender], stage: Stage | None
    ) -> list[Contender] | None:
        """The contenders as the judge reads them: whole, or each cut to its share of the judge's
        context when two would not fit (the first step's limit could not count its images, and
        text can re-tokenise longer than it sampled); None when too little of them would fit to
        judge. The step's trace records which."""
        if len(contenders) < 2 and self.verifier_form == "pairwise":
            return list(contenders)
        share = self._judge_share(step.prompt_tokens, self.verdict_question(stage))
        if share is None:
            return list(contenders)
        if share < MIN_JUDGED_TOKENS:
            step.judge_read_tokens = 0
            return None
        count = self.engine.judge_engine().count_tokens
        judged = [await as_judged(c, share, count) for c in contenders]
        if any(j is not c for j, c in zip(judged, contenders, strict=True)):
            step.judge_read_tokens = share
        return judged

    def keep_answer_logprobs(self, chosen: Candidate, text: str, stage_index: int) -> None:
        """The final stage's token log-probabilities, when the request asked for them."""
        if self.is_final(stage_index) and chosen.token_logprobs is not None:
            self.answer_logprobs = logprobs_of_text(chosen.token_logprobs, text)

    async def whole_answer_result(self, branch: Branch, started: float) -> SearchResult:
        """A result from one whole answer (sampled after the first stage's opening tag): split into
        stages (missing ones empty), so it has the same shape as a staged search's. Stage events all
        come now: nothing is decided before the whole answer is."""
        first, last = self.stages.stages[0], self.stages.last
        contents = self.stages.parse(first.open_tag + branch.text)
        contents[last.name] = self.config.answer.cut(contents[last.name])
        final_at = branch.text.find(last.open_tag)
        if final_at >= 0:
            self.usage.reasoning_tokens = await self.engine.count_tokens(branch.text[:final_at])
        elif any(stage.open_tag in branch.text for stage in self.stages):
            self.usage.reasoning_tokens = branch.candidate.num_tokens  # no final stage: all of it reasons
        seconds = time.perf_counter() - started
        traces = []
        for stage in self.stages:
            self.emit(StageStarted(stage.name, stage.index))
            traces.append(StageTrace(stage.name, contents[stage.name], [], seconds if stage.index == 0 else 0.0))
            self.emit(StageDecided(stage.name, stage.index, contents[stage.name]))
        return self.result(traces, answer_steps=[branch.step])

    async def sample_one(
        self, assistant_prefix: str, *, max_tokens: int, stop: tuple[str, ...], stage: Stage
    ) -> Branch:
        """One candidate, no judge, streamed: settled text goes out as StageDelta events at once."""
        prompt = self.engine.render(self.messages, assistant_prefix)
        settings = self.candidate_settings(1, max_tokens, stop, stage.index)
        raw, sent = "", 0
        last: StreamDelta | None = None
        async for delta in self.engine.stream(
            prompt, settings, job_id=self.job_id, priority=self.priority(stage.index)
        ):
            raw += delta.text
            settled = self.stages.settled_length(raw)
            if settled > sent:
                self.emit(StageDelta(stage.name, stage.index, raw[sent:settled]))
                sent = settled
            last = delta
        if last is None or last.candidate is None:  # the contract: the last delta holds the candidate
            raise EngineError(f"the stream of job {self.job_id} ended without its candidate")
        candidate = last.candidate
        text = self.stages.clean_content(candidate.text)
        step = StepTrace(
            prompt_tokens=last.prompt_tokens,
            cached_tokens=last.cached_tokens,
            candidates=[CandidateTrace(0, text, candidate.num_tokens, candidate.finish_reason)],
        )
        self.usage.prompt_tokens += last.prompt_tokens
        self.usage.cached_tokens += last.cached_tokens
        self.usage.completion_tokens += candidate.num_tokens
        self._seen = (prompt.text, last.prompt_tokens)
        self.accepted_tokens += candidate.num_tokens
        self.keep_answer_logprobs(candidate, text, stage.index)
        return Branch(text, candidate, step)

    def result(self, stages: list[StageTrace], answer_steps: list[StepTrace] | None = None) -> SearchResult:
        contents = {s.name: s.text for s in stages}
        if not answer_steps:  # staged: the kept text of the stages before the final stage
            self.usage.reasoning_tokens = sum(c.tokens for stage in stages[:-1] for c in stage.kept_candidates())
        return SearchResult(
            strategy=self.config.strategy,
            beam_width=self.config.beam_width,
            text=self.stages.render(contents),
            answer=contents[self.stages.last.name],
            stages=stages,
            usage=self.usage,
            seconds=time.perf_counter() - self.started,
            answer_steps=answer_steps or [],
            finish_reason="length" if self.out_of_context else _finish_reason(stages, answer_steps),
            answer_logprobs=self.answer_logprobs,
            verifier=self.verifier,
            verifier_form=self.verifier_form,
            retraces=self.retraces,
        )


def _finish_reason(stages: list[StageTrace], answer_steps: list[StepTrace] | None) -> AnswerFinish:
    """ "length" when the answer's last chosen text was cut by a token limit, else "stop"."""
    if answer_steps:
        kept = [c for c in answer_steps[-1].candidates if c.index == answer_steps[-1].winner]
    else:
        kept = stages[-1].kept_candidates()
    return "length" if kept and kept[-1].finish_reason == "length" else "stop"
