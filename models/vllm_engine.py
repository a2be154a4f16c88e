"""The engine contract on vLLM's `AsyncLLM` (GPU build in production, CPU build in tests and CI)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import logging
import math
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from models.chat_template import ChatTemplateRenderer
from models.engine import (
    Candidate,
    ChatMessage,
    ChoiceResult,
    Engine,
    EngineError,
    EngineStats,
    Generation,
    Prompt,
    SamplingSettings,
    StreamDelta,
    TokenLogprob,
    finish_reason_of,
)
from models.image_digest import image_digest
from models.option_tokens import OptionTokens, softmax
from models.vllm_refusals import vllm_refusal
from models.vllm_stats import VllmStatsCollector

if TYPE_CHECKING:
    from vllm import SamplingParams
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TextPrompt
    from vllm.outputs import CompletionOutput, RequestOutput
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

log = logging.getLogger(__name__)


class VllmEngine(Engine):
    """Runs one model on vLLM's AsyncLLM; one engine request per `generate`/`choose` call."""

    def __init__(self, llm: AsyncLLM, renderer: ChatTemplateRenderer, stats: VllmStatsCollector, model_name: str):
        self._llm = llm
        self._renderer = renderer
        self._stats = stats
        self.model_name = model_name
        self.max_model_len = llm.model_config.max_model_len
        self._tokenizer = llm.get_tokenizer()
        self._options = OptionTokens(self._tokenizer)
        self._ids = itertools.count()
        self._requests_by_job: dict[str, set[str]] = defaultdict(set)
        self._closed = False

    @classmethod
    def from_engine_args(cls, engine_args: AsyncEngineArgs, model_name: str | None = None) -> VllmEngine:
        """Start AsyncLLM from vLLM's own `AsyncEngineArgs` (see models.engine_config)."""
        from vllm.v1.engine.async_llm import AsyncLLM

        from models.vllm_seed_fix import ensure_plugin_allowed

        ensure_plugin_allowed()
        # Loaded first: a model without a usable chat template fails here, before the engine starts.
        renderer = ChatTemplateRenderer.from_pretrained(engine_args.tokenizer or engine_args.model)
        stats = VllmStatsCollector()
        llm = AsyncLLM.from_engine_args(engine_args, stat_loggers=[stats.factory])
        # vLLM re-reads its environment variables on every access (several per request) unless
        # told they are settled; its engine processes do this after start-up, its front end not.
        from vllm import envs

        envs.enable_envs_cache()
        served = engine_args.served_model_name
        if isinstance(served, (list, tuple)):
            served = served[0] if served else None
        return cls(llm, renderer, stats, model_name or served or engine_args.model)

    # -- prompts -------------------------------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        return self._renderer.render(messages, assistant_prefix)

    @staticmethod
    def _engine_input(prompt: Prompt) -> TextPrompt:
        if not prompt.images:
            return {"prompt": prompt.text}
        # A search sends the same image with every candidate and judge request (28 per search at
        # beam width 4); naming it by its digest spares vLLM from hashing its pixels each time.
        return {
            "prompt": prompt.text,
            "multi_modal_data": {"image": list(prompt.images)},
            "multi_modal_uuids": {"image": [image_digest(image) for image in prompt.images]},
        }

    # -- requests ------------------------------------------------------------------------------

    async def generate(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> Generation:
        from vllm.sampling_params import RequestOutputKind

        # Greedy decoding gives n equal candidates, and vLLM refuses n > 1 with temperature 0:
        # sample once and repeat it (the search merges equal candidates before judging).
        copies = settings.n if settings.temperature <= 0.0 else 1
        if copies > 1:
            settings = dataclasses.replace(settings, n=1)
        # Only the final output: the cumulative kind streams one completion at a time for n > 1.
        final = await self._final(prompt, _sampling_params(settings, RequestOutputKind.FINAL_ONLY), job_id, priority)
        top = settings.token_logprobs
        candidates = tuple(_candidate(c, top) for c in sorted(final.outputs, key=lambda c: c.index))
        return Generation(candidates * copies, _prompt_tokens(final), final.num_cached_tokens or 0)

    async def stream(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> AsyncIterator[StreamDelta]:
        from vllm.sampling_params import RequestOutputKind

        if settings.n != 1:
            raise ValueError("stream samples exactly one candidate")
        text, tokens = "", 0
        top = settings.token_logprobs
        logprobs: list[TokenLogprob] = []
        async for output in self._run(prompt, _sampling_params(settings, RequestOutputKind.DELTA), job_id, priority):
            piece = output.outputs[0]
            text += piece.text
            tokens += len(piece.token_ids)
            if top is not None:
                logprobs += _token_logprobs(piece.token_ids, piece.logprobs, top)
            if output.finished:
                # The last piece's outcome, with the whole text, token count and log-probabilities.
                candidate = dataclasses.replace(
                    _candidate(piece),
                    text=text,
                    num_tokens=tokens,
                    token_logprobs=None if top is None else tuple(logprobs),
                )
                yield StreamDelta(piece.text, candidate, _prompt_tokens(output), output.num_cached_tokens or 0)
            elif piece.text:
                yield StreamDelta(piece.text)

    async def choose(self, prompt: Prompt, options: Sequence[str], *, job_id: str, priority: int = 0) -> ChoiceResult:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        spellings = self._options.spellings_of(options)
        token_ids = spellings.token_ids
        params = SamplingParams(
            n=1,
            max_tokens=1,
            temperature=0.0,
            allowed_token_ids=token_ids,
            # Raw log-probabilities of exactly these tokens; renormalised, then summed per option below.
            logprob_token_ids=token_ids,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        output = await self._final(prompt, params, job_id, priority)
        completion = output.outputs[0]
        if completion.finish_reason == "abort" or not completion.logprobs:
            raise asyncio.CancelledError(f"choice for job {job_id} was aborted")
        step = completion.logprobs[0]
        logprobs = [step[t].logprob if t in step else -math.inf for t in token_ids]
        return ChoiceResult(
            dict(zip(options, spellings.per_option(softmax(logprobs)), strict=True)),
            _prompt_tokens(output),
            output.num_cached_tokens or 0,
        )

    async def _final(self, prompt: Prompt, params: SamplingParams, job_id: str, priority: int) -> RequestOutput:
        """The last output of one engine request (with FINAL_ONLY, its only one)."""
        final = None
        async for output in self._run(prompt, params, job_id, priority):
            final = output
        assert final is not None  # _run raises when the engine returned nothing
        return final

    async def _run(
        self, prompt: Prompt, params: SamplingParams, job_id: str, priority: int
    ) -> AsyncIterator[RequestOutput]:
        """One engine request, yielding vLLM's RequestOutputs; errors mapped to the contract's."""
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._closed or self._llm.errored:
            raise EngineError("the engine is not running")
        request_id = f"{job_id}-{next(self._ids)}"
        self._requests_by_job[job_id].add(request_id)
        produced = False
        try:
            async for output in self._llm.generate(self._engine_input(prompt), params, request_id, priority=priority):
                produced = True
                yield output
        except (VLLMClientError, ValueError) as exc:
            # vLLM refuses bad input while adding the request, as its client-error class or (in older
            # checks of its input processor) a bare ValueError: both are the client's, never a 500.
            raise vllm_refusal(str(exc), getattr(exc, "parameter", None)) from exc
        except EngineDeadError as exc:
            raise EngineError(f"the engine died: {exc}") from exc
        except (asyncio.CancelledError, GeneratorExit):
            # The caller went away: stop the engine work too, not just our wait for it.
            if not self._closed:
                await asyncio.shield(self._llm.abort(request_id))
            raise
        finally:
            requests = self._requests_by_job.get(job_id)
            if requests is not None:
                requests.discard(request_id)
                if not requests:
                    del self._requests_by_job[job_id]
        if not produced:
            raise EngineError(f"the engine returned nothing for {request_id}")

    async def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def abort(self, job_id: str) -> None:
        request_ids = list(self._requests_by_job.get(job_id, ()))
        if request_ids and not self._closed:
            await self._llm.abort(request_ids)

    # -- health and statistics -----------------------------------------------------------------

    async def is_healthy(self) -> bool:
        if self._closed or self._llm.errored:
            return False
        try:
            await self._llm.check_health()
        except Exception:  # any failure of the health probe means "not healthy", never a crash
            return False
        return True

    def stats(self) -> EngineStats:
        return self._stats.snapshot()

    def num_unfinished_requests(self) -> int:
        """Requests the engine still tracks (running, waiting or being finalised)."""
        return 0 if self._closed else self._llm.get_num_unfinished_requests()

    async def shutdown(self) -> None:
        if not self._closed:
            self._closed = True
            self._llm.shutdown()
            # AsyncLLM.__del__ shuts down again; let that run now rather than at interpreter
            # teardown, where it fails noisily on already-cleared globals. Every use checks _closed.
            del self._llm
            gc.collect()


def _sampling_params(settings: SamplingSettings, output_kind: RequestOutputKind) -> SamplingParams:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    if settings.token_logprobs is not None:
        logprobs: int | None = settings.token_logprobs
    else:
        logprobs = 0 if settings.logprobs else None  # 0: the sampled token's, for cumulative_logprob
    structured = None
    if settings.json_schema is not None:
        # An empty schema is "any JSON object" (OpenAI's json_object), which vLLM names apart.
        # Whitespace is the engine's setting (models/engine_config.py: compact JSON).
        structured = (
            StructuredOutputsParams(json=settings.json_schema)
            if settings.json_schema
            else StructuredOutputsParams(json_object=True)
        )
    controls = settings.controls
    return SamplingParams(
        n=settings.n,
        max_tokens=settings.max_tokens,
        temperature=settings.temperature,
        top_p=settings.top_p,
        seed=settings.seed,
        stop=list(settings.stop) or None,
        logprobs=logprobs,
        output_kind=output_kind,
        skip_reading_prefix_cache=not settings.use_prefix_cache,
        ignore_eos=settings.ignore_eos,
        presence_penalty=controls.presence_penalty,
        frequency_penalty=controls.frequency_penalty,
        repetition_penalty=controls.repetition_penalty,
        top_k=controls.top_k,
        min_p=controls.min_p,
        logit_bias=dict(controls.logit_bias) or None,
        structured_outputs=structured,
    )


def _candidate(completion: CompletionOutput, top_logprobs: int | None = None) -> Candidate:
    return Candidate(
        text=completion.text,
        num_tokens=len(completion.token_ids),
        cumulative_logprob=completion.cumulative_logprob,
        finish_reason=finish_reason_of(completion.finish_reason),
        stop_reason=completion.stop_reason if isinstance(completion.stop_reason, str) else None,
        token_logprobs=(
            None if top_logprobs is None else _token_logprobs(completion.token_ids, completion.logprobs, top_logprobs)
        ),
    )


def _token_logprobs(token_ids: Sequence[int], steps, top: int) -> tuple[TokenLogprob, ...]:
    """From vLLM's per-step {token id: Logprob}: the sampled token, and the `top` most likely ones
    (vLLM adds the sampled token to those when it is not among them)."""
    out = []
    for token_id, step in zip(token_ids, steps or (), strict=False):
        sampled = step[token_id]
        ranked = sorted((lp for lp in step.values() if lp.rank is not None and lp.rank <= top), key=lambda lp: lp.rank)
        alternatives = tuple((lp.decoded_token or "", lp.logprob) for lp in ranked)
        out.append(TokenLogprob(sampled.decoded_token or "", sampled.logprob, alternatives))
    return tuple(out)


def _prompt_tokens(output: RequestOutput) -> int:
    return len(output.prompt_token_ids or ())
