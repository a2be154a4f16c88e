"""The search's algorithm on a scripted engine: tournament, merging, debias, structure, events."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import replace

import pytest
from helpers import STAGES
from scripted_engine import ScriptedEngine, score

from models.engine import ChatMessage, PromptTooLongError
from stage_search.config import SearchConfig
from stage_search.events import StageDecided, StageStarted
from stage_search.judge import Contender, JudgeContext, PairwiseJudge
from stage_search.prompts import parse_verdict
from stage_search.search import run_search, stream_search
from stage_search.stages import StageSet
from stage_search.tournament import run_tournament

QUESTION = [ChatMessage("user", "How many shapes?")]
WELL_FORMED = re.compile(
    r"<SUMMARY>.*</SUMMARY>\n\n<CAPTION>.*</CAPTION>\n\n"
    r"<REASONING>.*</REASONING>\n\n<CONCLUSION>.*</CONCLUSION>",
    re.S,
)


def shuffled_scores(n: int) -> list[int]:
    # A fixed permutation per n, so the best is not always first or last.
    return [(i * 5 + 3) % 11 for i in range(n)]  # distinct for n <= 11


@pytest.mark.parametrize("n", range(1, 9))
async def test_tournament_returns_the_judges_favourite_in_ceil_log2_rounds(n):
    scores = shuffled_scores(n)
    engine = ScriptedEngine(lambda p, s: [f"cand-{x}" for x in scores])
    result = await run_search(engine, QUESTION, SearchConfig(beam_width=n, stage_prompt="never"))
    rounds = math.ceil(math.log2(n)) if n > 1 else 0
    for stage in result.stages:
        assert score(stage.text) == max(scores)
        assert len(stage.candidates) == n
        assert len(stage.matches) == n - 1
        assert stage.steps[0].rounds == rounds
    # Matches of a round run concurrently: the engine saw one wave of judge calls per round.
    assert engine.waves == 4 * rounds


@pytest.mark.parametrize("n", [3, 5, 8])
async def test_bare_tournament_plays_n_minus_1_matches(n):
    async def play(a, b, round_):
        return max(a, b), (a, b, round_)

    result = await run_tournament(list(range(n)), play)
    assert result.winner == n - 1
    assert len(result.matches) == n - 1
    assert result.rounds == math.ceil(math.log2(n))


async def test_identical_candidates_are_merged_before_judging():
    engine = ScriptedEngine(lambda p, s: ["cand-1", "cand-2", "cand-1", "cand-2"])
    result = await run_search(engine, QUESTION, SearchConfig(beam_width=4, stage_prompt="never"))
    for stage in result.stages:
        assert [c.merged_into for c in stage.candidates] == [None, None, 0, 1]
        assert len(stage.matches) == 1
    assert engine.choose_calls == 4


async def test_all_identical_candidates_need_no_judge():
    engine = ScriptedEngine(lambda p, s: ["same"] * s.n)
    result = await run_search(engine, QUESTION, SearchConfig(beam_width=4, stage_prompt="never"))
    assert engine.choose_calls == 0
    assert all(stage.matches == [] for stage in result.stages)


async def judge_both_orders(engine, debias):
    judge = PairwiseJudge(engine, debias=debias, job_id="j")
    context = JudgeContext(tuple(QUESTION), "", StageSet.from_names().stages[0])
    a, b = Contender(0, "cand-5"), Contender(1, "cand-4")
    return await judge.compare(context, a, b, 1), await judge.compare(context, b, a, 1)


async def test_debias_judges_twice_and_is_order_independent():
    # The judge prefers slot 1 strongly enough to flip a close call.
    biased = ScriptedEngine(lambda p, s: [], first_slot_bias=3.0)
    (w_ab, m_ab), (w_ba, m_ba) = await judge_both_orders(biased, debias=False)
    assert w_ab.index != w_ba.index, "without debias the slot decides"
    debiased = ScriptedEngine(lambda p, s: [], first_slot_bias=3.0)
    (w_ab, m_ab), (w_ba, m_ba) = await judge_both_orders(debiased, debias=True)
    assert debiased.choose_calls == 4
    assert w_ab.index == w_ba.index == 0
    assert m_ab.probabilities == pytest.approx(tuple(reversed(m_ba.probabilities)))


async def test_debias_breaks_an_exact_tie_by_index_not_by_slot():
    engine = ScriptedEngine(lambda p, s: [], first_slot_bias=0.0)
    judge = PairwiseJudge(engine, debias=True, job_id="j")
    context = JudgeContext(tuple(QUESTION), "", None)
    a, b = Contender(3, "cand-1"), Contender(1, "cand-1")
    assert (await judge.compare(context, a, b, 1))[0].index == 1
    assert (await judge.compare(context, b, a, 1))[0].index == 1


@pytest.mark.parametrize(
    "text,slot",
    [
        ("Since response 2 covers the image, I choose response 2.", 1),
        ("Response 1 restates; response 2 plans. I choose Response 1", 0),
        ("I would choose response #2", 1),
        ("Response 1 is clearly better than the other.", 0),
        ("2", 1),
        ("both are fine", None),
    ],
)
def test_generative_verdicts_are_parsed(text, slot):
    assert parse_verdict(text) == slot


async def test_generative_judge_uses_the_verdict_and_falls_back_when_unparsable():
    clear = ScriptedEngine(lambda p, s: ["cand-9", "cand-1"], verdict_text="Since it is shorter, I choose response 2")
    result = await run_search(clear, QUESTION, SearchConfig(beam_width=2, judge="generative", stage_prompt="never"))
    assert clear.choose_calls == 0 and clear.judge_generations == 4
    assert all(score(s.text) == 1 for s in result.stages)  # the verdict, not the scores, decided
    assert all(m.verdicts for s in result.stages for m in s.matches)

    vague = ScriptedEngine(lambda p, s: ["cand-9", "cand-1"], verdict_text="hmm")
    result = await run_search(vague, QUESTION, SearchConfig(beam_width=2, judge="generative", stage_prompt="never"))
    assert vague.choose_calls == 4
    assert all(score(s.text) == 9 for s in result.stages)


async def test_search_closes_stages_the_model_never_closes():
    # Candidates that run into the next tag or hit the token limit are cut and closed.
    engine = ScriptedEngine(lambda p, s: [" plan <CAPTION> leaked", " cand-2 </REASONING> x"], finish_reason="length")
    result = await run_search(engine, QUESTION, SearchConfig(beam_width=2, stage_prompt="never"))
    assert WELL_FORMED.fullmatch(result.text), result.text
    assert [s.name for s in result.stages] == ["SUMMARY", "CAPTION", "REASONING", "CONCLUSION"]
    assert all("<" not in s.text for s in result.stages)
    assert result.answer == result.stages[-1].text


async def test_each_stage_is_opened_by_the_search_after_the_accepted_ones():
    engine = ScriptedEngine(lambda p, s: [f"cand-{len(p.text)}"] * s.n)
    await run_search(engine, QUESTION, SearchConfig(beam_width=2, stage_prompt="never"))
    prefixes = [p.split("ASSISTANT:")[1] for p in engine.prompts]
    assert prefixes[0] == "<SUMMARY>"
    assert prefixes[1].startswith("<SUMMARY>") and prefixes[1].endswith("</SUMMARY>\n\n<CAPTION>")
    assert prefixes[3].endswith("</REASONING>\n\n<CONCLUSION>")


async def test_custom_tag_names():
    engine = ScriptedEngine(lambda p, s: ["x"] * s.n)
    config = SearchConfig(
        beam_width=2, stage_prompt="never", stages=StageSet.from_names(["PLAN", "SEE", "THINK", "ANSWER"])
    )
    result = await run_search(engine, QUESTION, config)
    assert result.text == "<PLAN>x</PLAN>\n\n<SEE>x</SEE>\n\n<THINK>x</THINK>\n\n<ANSWER>x</ANSWER>"


@pytest.mark.parametrize(
    "mode,model,expected",
    [
        ("auto", "scripted", True),
        ("auto", "Xkev/Llama-3.2V-11B-cot", False),
        ("always", "Xkev/Llama-3.2V-11B-cot", True),
        ("never", "scripted", False),
    ],
)
async def test_stage_instruction_is_added_unless_the_model_is_stage_trained(mode, model, expected):
    engine = ScriptedEngine(lambda p, s: ["x"] * s.n)
    engine.model_name = model
    await run_search(engine, QUESTION, SearchConfig(beam_width=1, stage_prompt=mode))
    assert ("Answer in four stages" in engine.prompts[0]) is expected


@pytest.mark.parametrize("strategy", ["stage", "sentence", "best_of_n", "majority", "none"])
async def test_every_strategy_keeps_the_four_stage_shape(strategy):
    engine = ScriptedEngine(lambda p, s: [f" step cand-{i}" for i in range(s.n)])
    result = await run_search(
        engine, QUESTION, SearchConfig(strategy=strategy, beam_width=3, stage_prompt="never", max_sentences_per_stage=2)
    )
    assert WELL_FORMED.fullmatch(result.text), result.text
    assert result.strategy == strategy


async def test_beam_width_one_never_judges():
    engine = ScriptedEngine(lambda p, s: [f"cand-{i}" for i in range(s.n)])
    for strategy in ("stage", "sentence", "best_of_n", "majority"):
        await run_search(engine, QUESTION, SearchConfig(strategy=strategy, beam_width=1, stage_prompt="never"))
    assert engine.choose_calls == 0


async def test_events_arrive_in_order_and_end_with_the_result():
    engine = ScriptedEngine(lambda p, s: [f"cand-{i}" for i in range(s.n)])
    events = [e async for e in stream_search(engine, QUESTION, SearchConfig(beam_width=2, stage_prompt="never"))]
    kinds = [(type(e).__name__, getattr(e, "stage", None)) for e in events]
    assert kinds == [
        (k, s) for s in ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION") for k in ("StageStarted", "StageDecided")
    ] + [("SearchFinished", None)]
    decided = [e.text for e in events if isinstance(e, StageDecided)]
    assert decided == [s.text for s in events[-1].result.stages]


async def test_closing_the_stream_aborts_the_jobs_engine_work():
    engine = ScriptedEngine(lambda p, s: ["x"] * s.n)
    stream = stream_search(engine, QUESTION, SearchConfig(beam_width=2, stage_prompt="never"), job_id="gone")
    first = await stream.__anext__()
    assert isinstance(first, StageStarted)
    engine.hang = True
    await asyncio.sleep(0.01)
    await stream.aclose()
    assert engine.aborted == ["gone"]


async def test_token_budget_is_shared_by_the_stages():
    seen = []

    def texts(prompt, settings):
        seen.append(settings.max_tokens)
        return ["a b c d e f g h i"] * settings.n  # 10 tokens each in the scripted count

    engine = ScriptedEngine(texts)
    await run_search(
        engine, QUESTION, SearchConfig(beam_width=1, stage_prompt="never", max_tokens_per_stage=16, max_tokens=30)
    )
    assert seen == [16, 16, 9, 1]


def whole(conclusion: str, tag: str = "") -> str:
    """A whole answer as best-of-N and majority sample it: after the first stage's opening tag."""
    return (
        f"plan{tag}</SUMMARY>\n\n<CAPTION>shapes</CAPTION>\n\n<REASONING>counting</REASONING>\n\n"
        f"<CONCLUSION>{conclusion}</CONCLUSION>"
    )


async def test_majority_keeps_the_most_frequent_conclusion_without_judging():
    # The judge would prefer cand-9, but three of five answers say 3 (in two wordings).
    answers = [whole("The answer is 3."), whole("4", " cand-9"), whole("3"), whole("5"), whole("The answer is 3.")]
    engine = ScriptedEngine(lambda p, s: answers[: s.n])
    result = await run_search(engine, QUESTION, SearchConfig(strategy="majority", beam_width=5, stage_prompt="never"))
    assert result.answer in ("The answer is 3.", "3")
    assert engine.choose_calls == 0 and result.usage.judge_tokens == 0


async def test_majority_sends_a_tie_to_the_judge():
    answers = [whole("3", " cand-1"), whole("4", " cand-7"), whole("4", " cand-2"), whole("3", " cand-5"), whole("")]
    engine = ScriptedEngine(lambda p, s: answers[: s.n])
    result = await run_search(engine, QUESTION, SearchConfig(strategy="majority", beam_width=5, stage_prompt="never"))
    # 3 and 4 tie with two votes each (the empty conclusion does not vote): the first answer of
    # each (cand-1, cand-7) meets in one match, and the judge keeps its favourite, cand-7.
    assert result.answer == "4" and "cand-7" in result.text
    step = result.answer_steps[0]
    assert len(step.candidates) == 5 and len(step.matches) == 1


def test_temperature_defaults_to_the_search_temperature_only_when_the_search_branches():
    from stage_search.config import DEFAULT_SEARCH_TEMPERATURE

    assert SearchConfig(beam_width=4).sampling_temperature == DEFAULT_SEARCH_TEMPERATURE
    assert SearchConfig(strategy="majority", beam_width=2).sampling_temperature == DEFAULT_SEARCH_TEMPERATURE
    assert SearchConfig(beam_width=1).sampling_temperature == 0.0  # a single sample: greedy
    assert SearchConfig(strategy="none", beam_width=4).sampling_temperature == 0.0
    assert SearchConfig(beam_width=4, temperature=0.0).sampling_temperature == 0.0  # a given one wins
    assert SearchConfig(beam_width=1, temperature=0.9, search_temperature=1.2).sampling_temperature == 0.9


def test_config_rejects_bad_values():
    for bad in (
        {"strategy": "mcts"},
        {"beam_width": 0},
        {"judge": "vote"},
        {"stage_prompt": "sometimes"},
        {"top_p": 0.0},
        {"max_tokens": 2},
        {"temperature": 2.5},
        {"search_temperature": -0.1},
    ):
        with pytest.raises(ValueError):
            SearchConfig(**bad)


@pytest.mark.parametrize(
    "text,settled",
    [
        ("plain words", 11),
        ("ends with <", 10),
        ("ends with </CAP", 10),
        ("cut <CAPTION> here", 4),
        ("a < b", 5),
        ("x</", 1),
    ],
)
def test_settled_length_holds_back_what_could_become_a_tag(text, settled):
    assert StageSet.from_names().settled_length(text) == settled


async def test_beam_width_one_streams_settled_text_before_the_stage_is_decided():
    from stage_search.events import StageDelta

    engine = ScriptedEngine(lambda p, s: [" one two <CAPTION> three"])
    events = [e async for e in stream_search(engine, QUESTION, SearchConfig(beam_width=1, stage_prompt="never"))]
    summary_deltas = "".join(e.text for e in events if isinstance(e, StageDelta) and e.stage == "SUMMARY")
    decided = next(e for e in events if isinstance(e, StageDecided) and e.stage == "SUMMARY")
    assert decided.text == " one two "
    assert decided.text.startswith(summary_deltas) and summary_deltas


# -- the context window -----------------------------------------------------------------------------


class ContextLimitedEngine(ScriptedEngine):
    """The scripted engine with a small context (a word is a token): it refuses a prompt over the
    context, as vLLM does, and every candidate runs to its token limit or the context's end. Its
    prompts may hold `image_tokens` that the tokenizer's count does not see, as images do."""

    def __init__(self, max_model_len: int, scores: list[int], image_tokens: int = 0, words_per_token: int = 1):
        def texts(prompt, settings):
            room = min(settings.max_tokens, max_model_len - self._tokens(prompt))
            return [f"cand-{x} " + "w " * max(room - 2, 0) * words_per_token for x in scores]  # room tokens each

        super().__init__(texts)
        self.max_model_len = max_model_len
        self.image_tokens = image_tokens
        # A sampled token that reads back as several: a random model's text, re-tokenised, can be
        # longer than the tokens that sampled it.
        self.words_per_token = words_per_token
        self.admitted: list[str] = []  # every prompt, the judge's included

    @property
    def longest_prompt(self) -> int:
        return max(len(text.split()) + self.image_tokens for text in self.admitted)

    def _tokens(self, prompt) -> int:
        return len(prompt.text.split()) + self.image_tokens

    def _admit(self, prompt) -> None:
        tokens = self._tokens(prompt)
        self.admitted.append(prompt.text)
        if tokens > self.max_model_len:
            raise PromptTooLongError(f"{tokens} tokens is over the context of {self.max_model_len}")

    async def generate(self, prompt, settings, *, job_id, priority=0):
        self._admit(prompt)
        generation = await super().generate(prompt, settings, job_id=job_id, priority=priority)
        sampled = tuple(replace(c, num_tokens=c.num_tokens // self.words_per_token) for c in generation.candidates)
        return replace(generation, candidates=sampled, prompt_tokens=self._tokens(prompt))

    async def choose(self, prompt, options, *, job_id, priority=0):
        self._admit(prompt)
        return await super().choose(prompt, options, job_id=job_id, priority=priority)


@pytest.mark.parametrize("strategy", ["stage", "sentence", "best_of_n", "majority"])
@pytest.mark.parametrize("judge", ["logprob", "generative"])
async def test_a_search_whose_candidates_would_overflow_the_context_fits_every_prompt_in_it(strategy, judge):
    """Stage limits far over the context: each step samples only what leaves room for the stages
    after it and for the judge to read two candidates. Before, the next stage's or the judge's
    prompt went over the context, and the admitted request failed half-way."""
    scores = shuffled_scores(4)
    engine = ContextLimitedEngine(900, scores)
    config = SearchConfig(strategy=strategy, judge=judge, beam_width=4, stage_prompt="never", max_tokens_per_stage=2000)
    result = await run_search(engine, QUESTION, config)
    assert engine.longest_prompt <= 900
    assert WELL_FORMED.fullmatch(result.text), result.text
    if strategy in ("stage", "sentence"):
        for stage in result.stages:
            assert stage.text.startswith(f"cand-{max(scores)} "), f"{stage.name} was not judged: {stage.text[:40]}"
            assert all(step.judge_read_tokens is None for step in stage.steps), "sized to be judged whole"


async def test_candidates_too_long_for_the_judge_are_judged_by_their_heads_and_kept_whole():
    """The first step cannot count the prompt's image tokens, so its candidates can come back
    longer than the judge can read in pairs: the judge reads the start of each, the winner is
    kept whole, and the later steps count exactly."""
    scores = shuffled_scores(4)
    engine = ContextLimitedEngine(2000, scores, image_tokens=500)
    config = SearchConfig(beam_width=4, stage_prompt="never", max_tokens_per_stage=2000)
    result = await run_search(engine, QUESTION, config)
    assert engine.longest_prompt <= 2000
    pairs = [re.search(r"Response 1:\n(.*?)\n\nResponse 2:\n(.*?)\n\n", p, re.S) for p in engine.admitted]
    judged = [text for pair in pairs if pair for text in pair.groups()]
    first = result.stages[0]
    assert first.text.startswith(f"cand-{max(scores)} ")
    assert first.text == first.steps[0].candidates[first.steps[0].winner].text, "the winner was not kept whole"
    assert any(first.text.startswith(text) and len(text) < len(first.text) for text in judged)
    (step,) = first.steps
    assert 0 < step.judge_read_tokens < step.candidates[step.winner].tokens, "the trace does not say it"
    assert result.to_dict()["stages"][0]["steps"][0]["judge_read_tokens"] == step.judge_read_tokens
    assert all(step.judge_read_tokens is None for stage in result.stages[1:] for step in stage.steps)
    assert all(stage.text.startswith(f"cand-{max(scores)} ") for stage in result.stages)


@pytest.mark.parametrize("strategy", ["stage", "sentence", "best_of_n"])
async def test_candidates_that_read_back_longer_than_they_sampled_still_fit_the_judge(strategy):
    """A candidate's sampled token count does not bound its text in the judge's prompt: here each
    sampled token reads back as three. The judge counts what it reads and cuts it to fit. Before,
    it sized the pair by the sampled counts and its prompt went over the context (CI saw vLLM's
    400 with value=4097 half-way through a search)."""
    scores = shuffled_scores(4)
    engine = ContextLimitedEngine(900, scores, words_per_token=3)
    config = SearchConfig(strategy=strategy, beam_width=4, stage_prompt="never", max_tokens_per_stage=2000)
    result = await run_search(engine, QUESTION, config)
    assert engine.longest_prompt <= 900
    assert WELL_FORMED.fullmatch(result.text), result.text
    first = result.stages[0]
    assert first.text.startswith(f"cand-{max(scores)} "), f"{first.name} was not judged: {first.text[:40]}"
    step = first.steps[0] if strategy != "best_of_n" else result.answer_steps[0]
    assert step.judge_read_tokens, "the judge read them whole, over its context"


async def test_a_prompt_that_fills_the_context_gets_an_answer_cut_for_length_not_an_error():
    engine = ContextLimitedEngine(900, shuffled_scores(4))
    question = [ChatMessage("user", "How many shapes? " + "and " * 880)]
    result = await run_search(engine, question, SearchConfig(beam_width=4, stage_prompt="never"))
    assert engine.longest_prompt <= 900
    assert [s.name for s in result.stages] == STAGES and WELL_FORMED.fullmatch(result.text)
    assert result.finish_reason == "length"
    assert result.stages[0].steps[0].matches == [], "the judge was asked with no room to read"
    assert result.stages[0].steps[0].judge_read_tokens == 0
