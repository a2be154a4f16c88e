"""The engine contract on transformers: for models vLLM does not run (Mllama, the paper's own
architecture, is gone from vLLM 0.32), with the same search and server on top.

How it spends its forward passes:
- one engine loop (a worker thread) takes every call; the `generate` calls in flight, from any
  number of requests, are decoded together, one forward pass per token for all of them
  (models/hf_batch.py);
- the N candidates of a call share one prompt encoding: the prompt is encoded once and its KV
  cache repeated for the N rows;
- finished KV caches are kept (a small LRU keyed by image digests and token ids), so a prompt that
  starts like an earlier sequence (the next stage continues the winner; a judge match continues the
  conversation) only encodes what is new (models/hf_prefix_cache.py);
- stop strings are checked on each row's newly decoded text only (models/hf_sequences.py);
- a judge choice is one forward pass reading the options' probabilities.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from models.chat_template import ChatTemplateRenderer
from models.engine import (
    Candidate,
    ChatMessage,
    ChoiceResult,
    Engine,
    EngineError,
    EngineStats,
    Generation,
    InvalidRequestError,
    Prompt,
    PromptTooLongError,
    SamplingSettings,
)
from models.hf_batch import Batch, signature
from models.hf_prefix_cache import PrefixCache
from models.hf_sequences import Group
from models.image_digest import image_digest
from models.option_tokens import OptionSpellings, OptionTokens

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

log = logging.getLogger(__name__)

Result = Generation | ChoiceResult  # what a call delivers


@dataclass(order=True)
class _Call:
    priority: int
    order: int
    job_id: str = field(compare=False)
    # Runs in the engine loop: returns a choice, or a Group to decode.
    start: Callable[[], Group | ChoiceResult] = field(compare=False)
    # deliver(result, error), from the engine loop.
    deliver: Callable[[Result | None, BaseException | None], None] = field(compare=False)
    # The result of a call aborted before it started; None: it raises CancelledError.
    aborted: Callable[[], Result] | None = field(compare=False)


class HfEngine(Engine):
    """Runs one model with transformers (`AutoModelForImageTextToText`, or a causal LM)."""

    def __init__(
        self,
        model: PreTrainedModel,
        processor: ProcessorMixin | PreTrainedTokenizerBase,
        renderer: ChatTemplateRenderer,
        model_name: str,
        max_model_len: int,
    ):
        self._model = model
        self._processor = processor
        # A text-only model's "processor" is its tokenizer.
        self._tokenizer = cast("PreTrainedTokenizerBase", getattr(processor, "tokenizer", processor))
        self._renderer = renderer
        self.model_name = model_name
        self.max_model_len = max_model_len
        first = next(model.parameters())
        self._device, self._dtype = first.device, first.dtype
        self._eos_ids = _eos_ids(model)
        text_config = model.config.get_text_config()
        self._cross_attention_layers = set(getattr(text_config, "cross_attention_layers", None) or [])
        image_token = getattr(processor, "image_token", None)
        image_token_ids: set[int] = set()
        if image_token:
            image_token_id = self._tokenizer.convert_tokens_to_ids(image_token)
            assert isinstance(image_token_id, int)  # one token in, one id out
            image_token_ids.add(image_token_id)
        self._options = OptionTokens(self._tokenizer)
        self._inbox: queue.Queue[_Call | None] = queue.Queue()
        self._order = itertools.count()
        self._lock = threading.Lock()  # guards what both the event loop and the engine loop change
        self._in_flight: dict[str, int] = defaultdict(int)  # job -> its calls queued or running
        self._unsettled: dict[int, _Call] = {}  # every call not yet answered (by order), for when the loop dies
        self._cancelled: set[str] = set()  # jobs whose calls stop at the next token
        self._queued_calls = 0  # submitted, not yet taken by the engine loop
        self._decoding_calls = 0  # generate calls in the batch being decoded (engine loop only)
        self._kept = PrefixCache(self._new_cache, self._cross_attention_layers, image_token_ids)
        self.decode_steps = 0  # forward passes of the shared batch (each feeds one token to every row)
        self._closed = False
        self._dead = False  # the engine loop died
        self._thread = threading.Thread(target=self._loop, name="hf-engine", daemon=True)
        self._thread.start()

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        model_name: str | None = None,
        dtype: str = "auto",
        device: str | None = None,
        max_model_len: int | None = None,
    ) -> HfEngine:
        """Load a model folder or hub id. bf16 on a GPU (spread with device_map="auto" over several),
        float32 on a CPU unless `dtype` says otherwise."""
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor

        cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
        torch_dtype = (torch.bfloat16 if cuda else torch.float32) if dtype == "auto" else getattr(torch, dtype)
        kwargs: dict[str, Any] = {"dtype": torch_dtype}
        if cuda:
            kwargs["device_map"] = "auto" if device is None else device
        config = AutoConfig.from_pretrained(path)
        try:
            model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
        except ValueError:  # a text-only model
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
        model.eval()
        processor = AutoProcessor.from_pretrained(path)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
        limit = max_model_len or getattr(text_config, "max_position_embeddings", None) or 4096
        return cls(model, processor, ChatTemplateRenderer(processor), model_name or path, limit)

    # -- the contract ----------------------------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        return self._renderer.render(messages, assistant_prefix)

    async def generate(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> Generation:
        unsupported = settings.beyond_basics()
        if unsupported:
            # Its sampler is ours (temperature, top-p, seed, stop); these need vLLM's.
            name = unsupported[0]
            raise InvalidRequestError(f"{name} is not supported by the hf engine; serve with the vLLM engine", name)
        aborted = lambda: Generation(tuple(Candidate("", 0, None, "abort") for _ in range(settings.n)), 0, 0)
        result = await self._submit(job_id, priority, lambda: self._start_group(prompt, settings, job_id), aborted)
        assert isinstance(result, Generation)
        return result

    async def choose(self, prompt: Prompt, options: Sequence[str], *, job_id: str, priority: int = 0) -> ChoiceResult:
        spellings = self._options.spellings_of(options)
        result = await self._submit(job_id, priority, lambda: self._choose(prompt, list(options), spellings), None)
        assert isinstance(result, ChoiceResult)
        return result

    async def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    async def abort(self, job_id: str) -> None:
        with self._lock:
            if self._in_flight.get(job_id):
                self._cancelled.add(job_id)

    async def is_healthy(self) -> bool:
        return not (self._closed or self._dead) and self._thread.is_alive()

    def stats(self) -> EngineStats:
        """Calls, not sequences: running = generate calls being decoded, waiting = calls not yet taken
        by the engine loop. This engine has no fixed KV pool: its KV figure is the kept caches' LRU
        fill, and its prefix-cache figures count prompt tokens looked up in and found there."""
        with self._lock:
            waiting = self._queued_calls
        return EngineStats(
            running_requests=self._decoding_calls,
            waiting_requests=waiting,
            kv_cache_usage=len(self._kept) / self._kept.capacity,
            prefix_cache_queries=self._kept.queried_tokens,
            prefix_cache_hits=self._kept.hit_tokens,
        )

    def num_unfinished_requests(self) -> int:
        with self._lock:
            return sum(self._in_flight.values())

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        await asyncio.to_thread(self._thread.join)
        self._kept.clear()

    async def _submit(
        self,
        job_id: str,
        priority: int,
        start: Callable[[], Group | ChoiceResult],
        aborted: Callable[[], Result] | None,
    ) -> Result:
        """Queue a call for the engine loop. `aborted()` gives the result of a call aborted before it
        started (a generation of "abort" candidates); None raises CancelledError instead."""
        if self._closed or not self._thread.is_alive():
            raise EngineError("the engine is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Result] = loop.create_future()

        def deliver(result: Result | None, error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, result, error)

        call = _Call(priority, next(self._order), job_id, start, deliver, aborted)
        with self._lock:
            if self._dead:
                raise EngineError("the engine is not running")
            self._in_flight[job_id] += 1
            self._queued_calls += 1
            self._unsettled[call.order] = call
        self._inbox.put(call)
        try:
            return await future
        except asyncio.CancelledError:
            with self._lock:  # the caller went away: its work stops at the next token
                if self._in_flight.get(job_id):
                    self._cancelled.add(job_id)
            raise

    # -- the engine loop (its own thread) ---------------------------------------------------------

    def _loop(self) -> None:
        """The engine loop; if it ever dies, every call still waiting hears so (EngineError), and
        the engine reports itself unhealthy."""
        try:
            self._serve_calls()
        except BaseException as exc:
            log.exception("hf engine: the engine loop died")
            with self._lock:
                self._dead = True
                orphans = list(self._unsettled.values())
            for call in orphans:
                self._settle_call(call, None, EngineError(f"the engine died: {exc!r}"))

    def _serve_calls(self) -> None:
        import torch

        waiting: list[Group] = []  # prefilled, not yet in the batch
        batch: Batch | None = None
        with torch.inference_mode():
            while True:
                calls = self._take_calls(block=batch is None and not waiting)
                if calls is None:
                    break
                with self._lock:
                    self._queued_calls -= len(calls)
                for call in sorted(calls):
                    group = self._start(call)
                    if group is not None:
                        waiting.append(group)
                for group in waiting:
                    self._check_abort(group)
                for group in [g for g in waiting if g.done]:
                    waiting.remove(group)
                    self._finish(group)
                try:
                    batch, waiting = self._regroup(batch, waiting)
                    self._decoding_calls = len(batch.groups) if batch else 0
                    if batch is None:
                        continue
                    self.decode_steps += 1
                    for group, logits in zip(batch.groups, batch.step(self._model), strict=True):
                        group.accept(logits)
                        self._check_abort(group)
                except Exception as exc:  # a failed step fails the groups in it, not the engine
                    log.exception("hf engine: a decoding step failed")
                    for group in (batch.groups if batch else []) + waiting:
                        self._deliver(group, None, exc)
                    batch, waiting = None, []
        for group in waiting + (batch.groups if batch else []):
            self._deliver(group, None, EngineError("the engine was shut down"))

    def _take_calls(self, block: bool) -> list[_Call] | None:
        """New calls; waits for one when there is nothing else to do. None once shut down."""
        calls: list[_Call] = []
        try:
            call = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            while True:
                if call is None:  # shut down: calls that came in with it get an answer too
                    with self._lock:
                        self._queued_calls -= len(calls)
                    for pending in calls:
                        self._settle_call(pending, None, EngineError("the engine was shut down"))
                    return None
                calls.append(call)
                call = self._inbox.get_nowait()
        except queue.Empty:
            return calls

    def _start(self, call: _Call) -> Group | None:
        """Run a call's first part: a choice completes here; a generation returns its group."""
        if call.job_id in self._cancelled or self._closed:
            if call.aborted is not None:
                self._settle_call(call, call.aborted(), None)
            else:
                self._settle_call(call, None, asyncio.CancelledError(f"call of job {call.job_id} was aborted"))
            return None
        try:
            outcome = call.start()
        except Exception as exc:
            self._settle_call(call, None, exc)
            return None
        if isinstance(outcome, Group):
            outcome.call = call
            return outcome
        self._settle_call(call, outcome, None)
        return None

    def _regroup(self, batch: Batch | None, waiting: list[Group]) -> tuple[Batch | None, list[Group]]:
        """Rebuild the batch when a group in it is done or a waiting group can join."""
        finished = [g for g in batch.groups if g.done] if batch else []
        members = [g for g in batch.groups if not g.done] if batch else []
        key = members[0].signature if members else (waiting[0].signature if waiting else None)
        joining = [g for g in waiting if g.signature == key]
        if batch is not None and not finished and not joining:
            return batch, waiting
        if batch is not None:
            batch.split(self._new_cache)
        for group in finished:
            self._finish(group)
        members += joining
        waiting = [g for g in waiting if g not in joining]
        return (
            Batch(members, self._new_cache, self._cross_attention_layers, self._device) if members else None
        ), waiting

    def _check_abort(self, group: Group) -> None:
        if group.job_id in self._cancelled or self._closed:
            group.aborted = True

    def _finish(self, group: Group) -> None:
        if group.cache is not None:
            self._kept.remember(_digests(group.prompt), group.fed, group.cache)
        self._deliver(group, group.result(), None)

    def _deliver(self, group: Group, result: Generation | None, error: BaseException | None) -> None:
        assert group.call is not None  # set when the call's start made the group
        self._settle_call(group.call, result, error)

    def _settle_call(self, call: _Call, result: Result | None, error: BaseException | None) -> None:
        # Bookkeeping first: a caller that resumes on the result must find its call gone.
        with self._lock:
            if self._unsettled.pop(call.order, None) is None:
                return  # already answered (when the loop died)
            self._in_flight[call.job_id] -= 1
            if not self._in_flight[call.job_id]:
                del self._in_flight[call.job_id]
                self._cancelled.discard(call.job_id)
        call.deliver(result, error)

    def _new_cache(self) -> DynamicCache:
        from transformers import DynamicCache

        return DynamicCache(config=self._model.config)

    # -- model work (engine loop) ----------------------------------------------------------------

    def _start_group(self, prompt: Prompt, settings: SamplingSettings, job_id: str) -> Group:
        """Encode the prompt once, repeat its cache for the n rows and sample their first tokens."""
        ids, logits, cache, extra, cached = self._prefill(prompt, settings.use_prefix_cache)
        if settings.n > 1:
            cache.batch_repeat_interleave(settings.n)
        group = Group(
            job_id=job_id,
            settings=settings,
            prompt=prompt,
            prompt_ids=ids,
            cached_tokens=cached,
            cache=cache,
            cross_mask=extra.get("cross_attention_mask"),
            tokenizer=self._tokenizer,
            eos_ids=self._eos_ids,
            pad_id=self._pad_id(),
        )
        group.signature = signature(group, self._cross_attention_layers)
        group.accept(logits.expand(settings.n, -1))
        return group

    def _choose(self, prompt: Prompt, options: list[str], spellings: OptionSpellings) -> ChoiceResult:
        import torch

        ids, logits, cache, _, cached = self._prefill(prompt, True)
        self._kept.remember(_digests(prompt), [ids], cache)
        logprobs = torch.log_softmax(logits[0].float(), dim=-1)[spellings.token_ids]
        probabilities = spellings.per_option(torch.softmax(logprobs, dim=-1).tolist())
        return ChoiceResult(dict(zip(options, probabilities, strict=True)), len(ids), cached)

    def _prefill(self, prompt: Prompt, use_cache: bool):
        """Encode the prompt, reusing the longest kept cache it starts with. Returns (token ids,
        logits of the last position [1, V], cache, per-token extras, cached token count)."""
        try:
            inputs = (
                self._processor(
                    images=list(prompt.images) or None, text=prompt.text, return_tensors="pt", add_special_tokens=False
                )
                if prompt.images
                else self._tokenizer(prompt.text, return_tensors="pt", add_special_tokens=False)
            )
        except (ValueError, TypeError) as exc:  # the processor refused the input (images, text)
            raise InvalidRequestError(f"the model's processor refused the input: {exc}") from exc
        # Pixels come out of the processor in float32; the model may run in bfloat16.
        inputs = {
            k: v.to(self._device, dtype=self._dtype) if v.is_floating_point() else v.to(self._device)
            for k, v in inputs.items()
        }
        ids = inputs["input_ids"][0].tolist()
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt is {len(ids)} tokens; this model takes at most {self.max_model_len - 1} before the answer"
            )
        extra = {k: v for k, v in inputs.items() if k == "cross_attention_mask"}
        reuse = self._kept.lookup(_digests(prompt), ids) if use_cache else None
        if reuse is not None:
            cache, common = reuse
            tail = {"input_ids": inputs["input_ids"][:, common:]}
            if "cross_attention_mask" in inputs:
                tail["cross_attention_mask"] = inputs["cross_attention_mask"][:, common:]
            out = self._model(
                **tail,
                past_key_values=cache,
                use_cache=True,
                attention_mask=_ones(1, len(ids), self._device),
                cache_position=_arange(common, len(ids), self._device),
            )
            return ids, out.logits[:, -1, :], out.past_key_values, extra, common
        out = self._model(**inputs, past_key_values=self._new_cache(), use_cache=True)
        return ids, out.logits[:, -1, :], out.past_key_values, extra, 0

    # -- helpers ---------------------------------------------------------------------------------

    def _pad_id(self) -> int:
        pad = self._tokenizer.pad_token_id
        return pad if pad is not None else next(iter(self._eos_ids))


def _digests(prompt: Prompt) -> tuple[str, ...]:
    return tuple(image_digest(image) for image in prompt.images)


def _eos_ids(model: PreTrainedModel) -> set[int]:
    config = model.generation_config if getattr(model, "generation_config", None) else model.config
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config.get_text_config(), "eos_token_id", None)
    return set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])


def _ones(batch: int, length: int, device: torch.device) -> torch.Tensor:
    import torch

    return torch.ones(batch, length, dtype=torch.long, device=device)


def _arange(start: int, stop: int, device: torch.device) -> torch.Tensor:
    import torch

    return torch.arange(start, stop, device=device)


def _settle(future: asyncio.Future[Result], result: Result | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None or result is None:
        future.set_exception(error or EngineError("the engine delivered no result"))
    else:
        future.set_result(result)
