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
from stage_search.config import SearchConfig, SwiresSettings
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


@pytest.mark.parametrize("strategy", ["stage", "sentence", "best_of_n", "majority", "swires", "none"])
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


@pytest.mark.parametrize(
    "strategy,judge,form",
    [(s, j, "pairwise") for s in ("stage", "sentence", "best_of_n", "majority") for j in ("logprob", "generative")]
    + [(s, "logprob", "pointwise") for s in ("stage", "sentence", "best_of_n", "swires")],
)
async def test_a_search_whose_candidates_would_overflow_the_context_fits_every_prompt_in_it(strategy, judge, form):
    """Stage limits far over the context: each step samples only what leaves room for the stages
    after it and for the verifier to read its candidates (two to a match, one to a score). Before,
    the next stage's or the judge's prompt went over the context, and the request failed half-way."""
    scores = shuffled_scores(4)
    engine = ContextLimitedEngine(900, scores)
    config = SearchConfig(
        strategy=strategy,
        judge=judge,
        verifier_form=form,
        beam_width=4,
        stage_prompt="never",
        max_tokens_per_stage=2000,
    )
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


# -- the pointwise verifier and swires -------------------------------------------------------------


async def test_pointwise_stage_search_keeps_the_best_scored_candidate_with_one_score_each():
    scores = shuffled_scores(5)
    engine = ScriptedEngine(lambda p, s: [f"cand-{x}" for x in scores] + [f"cand-{scores[0]}"])
    result = await run_search(
        engine, QUESTION, SearchConfig(beam_width=6, verifier_form="pointwise", stage_prompt="never")
    )
    assert result.verifier_form == "pointwise" and result.verifier == "self"
    for stage in result.stages:
        assert score(stage.text) == max(scores)
        assert stage.matches == []
        (step,) = stage.steps
        assert [s.index for s in step.scores] == [0, 1, 2, 3, 4], "the merged copy was scored"
        assert step.winner == max(step.scores, key=lambda s: s.score).index
    assert engine.choose_calls == 4 * 5
    assert result.usage.judge_calls == 4 * 5
    assert result.usage.judge_tokens == sum(s.judge_tokens for stage in result.stages for s in stage.scores)


async def test_auto_verifier_form_is_pairwise_for_self_judging():
    engine = ScriptedEngine(lambda p, s: [f"cand-{i}" for i in range(s.n)])
    result = await run_search(engine, QUESTION, SearchConfig(beam_width=2, stage_prompt="never"))
    assert result.verifier_form == "pairwise"
    assert all(len(stage.matches) == 1 and stage.scores == [] for stage in result.stages)
    assert result.usage.judge_calls == 4


MULTIPLE_CHOICE = [
    ChatMessage("user", "How many shapes?\nA. cand-2\nB. cand-9\nC. cand-4\nAnswer with the option's letter.")
]


async def test_the_verifier_reads_the_text_of_the_option_a_conclusion_picks():
    # The scripted verifier scores the last number it reads: a bare letter has none, so only the
    # quoted option's text can tell "B" (cand-9) from "A" and "C".
    engine = ScriptedEngine(lambda p, s: ["A", "C", "B", "A"] if p.text.endswith("<CONCLUSION>") else ["x"] * s.n)
    config = SearchConfig(beam_width=4, verifier_form="pointwise", stage_prompt="never")
    result = await run_search(engine, MULTIPLE_CHOICE, config)
    assert result.answer == "B"
    assert sorted(engine.scored[-3:]) == [2, 4, 9]


@pytest.mark.parametrize(
    ("stage", "candidate", "quote"),
    [
        (3, "B", "\n(option B: cand-9)"),
        (3, "The answer is C.", "\n(option C: cand-4)"),
        (3, "I cannot tell.", ""),  # picks no option
        (2, "B", ""),  # only the final stage states the answer
        (None, "plan</SUMMARY>\n\n<CONCLUSION>A</CONCLUSION>", "\n(option A: cand-2)"),  # a whole answer's last section
    ],
)
def test_the_verifiers_question_quotes_the_picked_option(stage, candidate, quote):
    stages = StageSet.from_names()
    judged = stages.stages[stage] if stage is not None else None
    context = JudgeContext(tuple(MULTIPLE_CHOICE), "", judged, stages.stages[0].open_tag)
    question = context.scored_messages(candidate)[-1].content
    closed = judged.close_tag if judged is not None else ""
    assert question.endswith(candidate + closed + quote)
    open_question = JudgeContext(tuple(QUESTION), "", judged, stages.stages[0].open_tag)
    assert open_question.scored_messages(candidate)[-1].content.endswith(candidate + closed)


@pytest.mark.parametrize("strategy", ["best_of_n", "majority"])
async def test_whole_answers_are_picked_by_the_pointwise_verifier_too(strategy):
    # Majority: two answers each for two conclusions, a tie the verifier breaks.
    engine = ScriptedEngine(lambda p, s: ["x <CONCLUSION>cand-2", "y <CONCLUSION>cand-7"] * (s.n // 2))
    config = SearchConfig(strategy=strategy, beam_width=4, verifier_form="pointwise", stage_prompt="never")
    result = await run_search(engine, QUESTION, config)
    assert score(result.answer) == 7
    (step,) = result.answer_steps
    assert sorted(s.index for s in step.scores) == [0, 1] and step.matches == []
    assert len(engine.prompts) == 1  # one sampling call; the scores are choose calls
    assert sorted(engine.scored) == [2, 7]


class RetracingScript:
    """Captions, reasonings and conclusions for swires whose scores are set per attempt: the
    reasonings of the first `low_attempts` attempts score below the cutoff, later ones above."""

    def __init__(self, low_attempts: int):
        self.low_attempts = low_attempts
        self.caption_calls = 0

    def __call__(self, prompt, settings):
        opened = prompt.text.rsplit("ASSISTANT:", 1)[1]
        if opened.endswith("<CAPTION>"):
            self.caption_calls += 1
            return [f"caption {self.caption_calls}.{i} cand-{i}" for i in range(settings.n)]
        if opened.endswith("<REASONING>"):
            attempt = self.caption_calls  # reasonings follow their attempt's captions
            base = 1 if attempt <= self.low_attempts else 8
            caption = re.findall(r"caption (\d+\.\d+)", opened)[-1]
            return [f"reasoning of {caption} cand-{base + i}" for i in range(settings.n)]
        if opened.endswith("<CONCLUSION>"):
            return [f"conclusion after cand-{score(opened)} cand-{score(opened) + 10}"] * settings.n
        return ["plan"] * settings.n


async def test_swires_retraces_while_the_second_best_reasoning_scores_below_the_cutoff():
    script = RetracingScript(low_attempts=2)
    engine = ScriptedEngine(script, yes_from=5.0)  # log-odds cand-N: N - 5
    config = SearchConfig(strategy="swires", stage_prompt="never")  # cutoff 0: retrace at N <= 5
    events = [e async for e in stream_search(engine, QUESTION, config)]
    result = events[-1].result
    assert result.retraces == 2 and script.caption_calls == 3
    assert result.verifier_form == "pointwise"
    caption, reasoning, conclusion = result.stages[1:]
    assert [s.attempt for s in caption.steps] == [0, 1, 2]
    assert [s.attempt for s in reasoning.steps] == [0, 0, 1, 1, 2, 2]
    # The published counts: 4 captions an attempt, the best 2 kept, 2 reasonings each.
    assert all(len(s.candidates) == 4 and len(s.kept) == 2 for s in caption.steps)
    assert all(len(s.candidates) == 2 and len(s.scores) == 2 for s in reasoning.steps)
    assert [s.kept for s in caption.steps] == [[3, 2], [7, 6], [11, 10]]
    # Candidates are numbered across the stage's steps.
    assert [c.index for c in caption.candidates] == list(range(12))
    # The three best reasonings of the pool (all from the third attempt, cand-8 and cand-9) get one
    # conclusion each; the best-scored conclusion wins, with its path's caption and reasoning.
    assert len(conclusion.steps) == 3 and all(len(s.candidates) == 1 for s in conclusion.steps)
    assert score(conclusion.text) == 19 and score(reasoning.text) == 9
    assert caption.text.startswith("caption 3.") and caption.chosen in caption.steps[2].kept
    assert reasoning.text.startswith(f"reasoning of {caption.text.split()[1]} ")
    assert result.to_dict()["retraces"] == 2
    assert result.to_dict()["stages"][2]["winner"] == reasoning.chosen
    # The stream: the summary first; the other stages, in order, once the path is chosen.
    kinds = [(type(e).__name__, getattr(e, "stage", None)) for e in events[:-1]]
    assert kinds[0] == ("StageStarted", "SUMMARY") and ("StageDelta", "SUMMARY") in kinds
    assert [k for k in kinds if k[0] != "StageDelta"] == [
        (kind, stage) for stage in STAGES for kind in ("StageStarted", "StageDecided")
    ]
    # Usage: every candidate and every score, the verifier's apart.
    assert result.usage.completion_tokens == sum(c.tokens for stage in result.stages for c in stage.candidates)
    assert result.usage.judge_calls == engine.choose_calls == 3 * (4 + 4) + 3
    assert result.usage.reasoning_tokens == sum(
        c.tokens for stage in result.stages[:-1] for c in stage.candidates if c.index == stage.winner
    )


async def test_swires_stops_at_the_retrace_limit_and_keeps_the_best_it_found():
    script = RetracingScript(low_attempts=99)
    engine = ScriptedEngine(script, yes_from=5.0)
    config = SearchConfig(strategy="swires", stage_prompt="never", swires=SwiresSettings(max_retraces=1))
    result = await run_search(engine, QUESTION, config)
    assert result.retraces == 1 and script.caption_calls == 2
    assert score(result.stages[2].text) == 2


async def test_swires_does_not_retrace_when_the_first_attempt_passes():
    script = RetracingScript(low_attempts=0)
    engine = ScriptedEngine(script, yes_from=5.0)
    result = await run_search(engine, QUESTION, SearchConfig(strategy="swires", stage_prompt="never"))
    assert result.retraces == 0 and script.caption_calls == 1


async def test_swires_counts_and_cutoff_are_settings():
    script = RetracingScript(low_attempts=0)
    engine = ScriptedEngine(script, yes_from=5.0)
    settings = SwiresSettings(captions=3, kept_captions=1, reasonings_per_caption=3, conclusions=2, cutoff=10.0)
    result = await run_search(engine, QUESTION, SearchConfig(strategy="swires", stage_prompt="never", swires=settings))
    caption, reasoning, conclusion = result.stages[1:]
    assert result.retraces == 4, "a cutoff of 10 is never passed: every retrace is taken"
    assert all(len(s.candidates) == 3 and len(s.kept) == 1 for s in caption.steps)
    assert all(len(s.candidates) == 3 for s in reasoning.steps) and len(reasoning.steps) == 5
    assert len(conclusion.steps) == 2


def test_swires_settings_are_checked():
    with pytest.raises(ValueError, match="swires"):
        SwiresSettings(captions=2, kept_captions=3)
    with pytest.raises(ValueError, match="swires"):
        SwiresSettings(max_retraces=-1)
