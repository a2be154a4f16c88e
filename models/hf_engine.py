"""The engine contract on transformers: for models vLLM does not run (Mllama, the paper's own
architecture, is gone from vLLM 0.32), with the same search and server on top.

How it spends its forward passes:
- the N candidates of a call are one batch: the prompt is encoded once (batch of 1) and its KV cache
  repeated for the N rows;
- finished KV caches are kept (a small LRU keyed by image digests and token ids), so a prompt that
  starts like an earlier sequence (the next stage continues the winner; a judge match continues the
  conversation) only encodes what is new;
- stop strings are checked on each row's newly decoded text only (incremental detokenisation);
- a judge choice is one forward pass reading the options' probabilities.
All model work runs in one worker thread, one call at a time, ordered by priority; calls from
concurrent requests take turns rather than sharing forward passes (see docs/engine.md).
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import logging
import random
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

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
    PromptTooLongError,
    SamplingSettings,
)
from models.image_digest import image_digest

log = logging.getLogger(__name__)

CACHE_ENTRIES = 32  # finished KV caches kept for prefix reuse


@dataclass
class _CacheEntry:
    images: tuple[str, ...]
    rows: list[list[int]]  # per row, the token ids whose keys and values the cache holds
    cache: Any


class _IncrementalText:
    """Decodes one row's tokens as they come, looking only at a short window of recent tokens."""

    def __init__(self, tokenizer: Any):
        self._tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # window start
        self._read = 0  # tokens already turned into text

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        decode = lambda ids: self._tokenizer.decode(ids, skip_special_tokens=True)
        before = decode(self.ids[self._prefix:self._read])
        after = decode(self.ids[self._prefix:])
        if after.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the rest
            return ""
        delta = after[len(before):]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta


class HfEngine(Engine):
    """Runs one model with transformers (`AutoModelForImageTextToText`, or a causal LM)."""

    def __init__(self, model: Any, processor: Any, renderer: ChatTemplateRenderer, model_name: str,
                 max_model_len: int):
        self._model = model
        self._processor = processor
        self._tokenizer = getattr(processor, "tokenizer", processor)
        self._renderer = renderer
        self.model_name = model_name
        self.max_model_len = max_model_len
        first = next(model.parameters())
        self._device, self._dtype = first.device, first.dtype
        self._eos_ids = _eos_ids(model)
        text_config = model.config.get_text_config()
        self._cross_attention_layers = set(getattr(text_config, "cross_attention_layers", None) or [])
        image_token = getattr(processor, "image_token", None)
        self._image_token_ids = {self._tokenizer.convert_tokens_to_ids(image_token)} if image_token else set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-engine")
        self._queue: asyncio.PriorityQueue | None = None
        self._dispatcher: asyncio.Task | None = None
        self._order = itertools.count()
        self._in_flight: dict[str, int] = defaultdict(int)  # job -> its calls queued or running
        self._cancelled: set[str] = set()  # jobs whose calls stop at the next token
        self._cache: OrderedDict[int, _CacheEntry] = OrderedDict()
        self._cache_ids = itertools.count()
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._queries = 0
        self._hits = 0
        self._closed = False

    @classmethod
    def from_pretrained(cls, path: str, *, model_name: str | None = None, dtype: str = "auto",
                        device: str | None = None, max_model_len: int | None = None) -> "HfEngine":
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

    async def generate(self, prompt: Prompt, settings: SamplingSettings, *, job_id: str,
                       priority: int = 0) -> Generation:
        return await self._submit(job_id, priority, lambda: self._generate(prompt, settings, job_id))

    async def choose(self, prompt: Prompt, options: Sequence[str], *, job_id: str,
                     priority: int = 0) -> ChoiceResult:
        if len(set(options)) < 2:
            raise ValueError("choose needs at least two distinct options")
        token_ids = [self._option_token_id(o) for o in options]
        return await self._submit(job_id, priority, lambda: self._choose(prompt, list(options), token_ids))

    async def abort(self, job_id: str) -> None:
        if self._in_flight.get(job_id):
            self._cancelled.add(job_id)

    async def is_healthy(self) -> bool:
        return not self._closed

    def stats(self) -> EngineStats:
        return EngineStats(running_requests=self._running, waiting_requests=self._waiting,
                           kv_cache_usage=len(self._cache) / CACHE_ENTRIES,
                           prefix_cache_queries=self._queries, prefix_cache_hits=self._hits)

    def num_unfinished_requests(self) -> int:
        return self._running + self._waiting

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._cache.clear()

    # -- the engine loop -------------------------------------------------------------------------

    async def _submit(self, job_id: str, priority: int, work: Callable[[], Any]) -> Any:
        """Queue `work` for the worker thread; lower priority values run first, then arrival order."""
        if self._closed:
            raise EngineError("the engine is not running")
        if self._queue is None:
            self._queue = asyncio.PriorityQueue()
            self._dispatcher = asyncio.create_task(self._dispatch())
        done = asyncio.get_running_loop().create_future()
        self._in_flight[job_id] += 1
        self._waiting += 1
        await self._queue.put((priority, next(self._order), job_id, work, done))
        try:
            return await done
        except asyncio.CancelledError:
            self._cancelled.add(job_id)  # the caller went away: stop its work at the next token
            raise

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            _, _, job_id, work, done = await self._queue.get()
            self._waiting -= 1
            try:
                if done.done() or job_id in self._cancelled:
                    if not done.done():
                        done.set_exception(asyncio.CancelledError())
                    continue
                self._running += 1
                try:
                    result = await loop.run_in_executor(self._executor, work)
                except BaseException as exc:  # delivered to the caller, never fatal to the loop
                    if not done.done():
                        done.set_exception(exc)
                else:
                    if not done.done():
                        done.set_result(result)
                finally:
                    self._running -= 1
            finally:
                self._finished(job_id)

    def _finished(self, job_id: str) -> None:
        """One call of the job is done; with none left, forget that the job was aborted."""
        self._in_flight[job_id] -= 1
        if not self._in_flight[job_id]:
            del self._in_flight[job_id]
            self._cancelled.discard(job_id)

    # -- model work (worker thread) --------------------------------------------------------------

    def _generate(self, prompt: Prompt, settings: SamplingSettings, job_id: str) -> Generation:
        import torch

        with torch.inference_mode():
            ids, logits, cache, extra, cached = self._prefill(prompt, settings.use_prefix_cache)
            n = settings.n
            if n > 1:
                cache.batch_repeat_interleave(n)
                logits = logits.repeat(n, 1)
            generator = torch.Generator(device=logits.device)
            generator.manual_seed(settings.seed if settings.seed is not None else random.getrandbits(63))
            rows = [_IncrementalText(self._tokenizer) for _ in range(n)]
            finish: list[str | None] = [None] * n
            stop_reason: list[str | None] = [None] * n
            logprob = [0.0] * n
            fed = [list(ids) for _ in range(n)]
            length = len(ids)
            longest_stop = max((len(s) for s in settings.stop), default=0)
            aborted = False
            for step in range(settings.max_tokens):
                if job_id in self._cancelled or self._closed:
                    aborted = True
                    break
                tokens, token_logprobs = _sample(logits, settings, generator)
                for r in range(n):
                    if finish[r] is not None:
                        continue
                    token = int(tokens[r])
                    logprob[r] += float(token_logprobs[r])
                    if token in self._eos_ids and not settings.ignore_eos:
                        finish[r] = "stop"
                        rows[r].ids.append(token)
                        continue
                    delta = rows[r].add(token)
                    if delta and settings.stop:
                        window = rows[r].text[-(len(delta) + longest_stop):]
                        hit = _first_stop(window, settings.stop)
                        if hit is not None:
                            cut = len(rows[r].text) - len(window) + window.index(hit)
                            rows[r].text = rows[r].text[:cut]
                            finish[r], stop_reason[r] = "stop", hit
                            continue
                    if len(rows[r].ids) >= settings.max_tokens:
                        finish[r] = "length"
                if all(f is not None for f in finish) or step == settings.max_tokens - 1:
                    break
                # Rows already finished are fed a pad token; their outputs are ignored.
                feed = [int(tokens[r]) if finish[r] is None else self._pad_id() for r in range(n)]
                for r in range(n):
                    if finish[r] is None:
                        fed[r].append(feed[r])
                logits = self._forward_step(torch.tensor(feed, device=self._device)[:, None], cache, length, extra, n)
                length += 1
            self._remember(prompt, fed, cache)
            candidates = tuple(
                Candidate(text=row.text, num_tokens=len(row.ids), cumulative_logprob=logprob[r],
                          finish_reason="abort" if aborted and finish[r] is None else (finish[r] or "length"),
                          stop_reason=stop_reason[r])
                for r, row in enumerate(rows))
            return Generation(candidates, len(ids), cached)

    def _choose(self, prompt: Prompt, options: list[str], token_ids: list[int]) -> ChoiceResult:
        import torch

        with torch.inference_mode():
            ids, logits, cache, _, cached = self._prefill(prompt, True)
            self._remember(prompt, [ids], cache)
            logprobs = torch.log_softmax(logits[0].float(), dim=-1)[token_ids]
            probabilities = torch.softmax(logprobs, dim=-1).tolist()
            return ChoiceResult(dict(zip(options, probabilities)), len(ids), cached)

    def _prefill(self, prompt: Prompt, use_cache: bool):
        """Encode the prompt, reusing the longest kept cache it starts with. Returns (token ids,
        logits of the last position [1, V], cache, per-token extras, cached token count)."""
        inputs = self._processor(images=list(prompt.images) or None, text=prompt.text, return_tensors="pt",
                                 add_special_tokens=False) if prompt.images else \
            self._tokenizer(prompt.text, return_tensors="pt", add_special_tokens=False)
        # Pixels come out of the processor in float32; the model may run in bfloat16.
        inputs = {k: v.to(self._device, dtype=self._dtype) if v.is_floating_point() else v.to(self._device)
                  for k, v in inputs.items()}
        ids = inputs["input_ids"][0].tolist()
        if len(ids) >= self.max_model_len:
            raise PromptTooLongError(f"the prompt is {len(ids)} tokens; this model takes at most "
                                     f"{self.max_model_len - 1} before the answer")
        extra = {k: v for k, v in inputs.items() if k == "cross_attention_mask"}
        images = tuple(image_digest(image) for image in prompt.images)
        self._queries += len(ids)
        reuse = self._lookup(images, ids) if use_cache else None
        if reuse is not None:
            cache, common = reuse
            self._hits += common
            tail = {"input_ids": inputs["input_ids"][:, common:]}
            if "cross_attention_mask" in inputs:
                tail["cross_attention_mask"] = inputs["cross_attention_mask"][:, common:]
            out = self._model(**tail, past_key_values=cache, use_cache=True,
                              attention_mask=_ones(1, len(ids), self._device),
                              cache_position=_arange(common, len(ids), self._device))
            return ids, out.logits[:, -1, :], out.past_key_values, extra, common
        from transformers import DynamicCache

        out = self._model(**inputs, past_key_values=DynamicCache(config=self._model.config), use_cache=True)
        return ids, out.logits[:, -1, :], out.past_key_values, extra, 0

    def _forward_step(self, tokens: Any, cache: Any, length: int, extra: dict, n: int) -> Any:
        kwargs: dict[str, Any] = {}
        if "cross_attention_mask" in extra:
            last = extra["cross_attention_mask"][:, -1:]  # new tokens see the image as the last prompt token did
            kwargs["cross_attention_mask"] = last.expand(n, *last.shape[1:])
        out = self._model(input_ids=tokens, past_key_values=cache, use_cache=True,
                          attention_mask=_ones(n, length + 1, self._device),
                          cache_position=_arange(length, length + 1, self._device), **kwargs)
        return out.logits[:, -1, :]

    # -- kept caches -----------------------------------------------------------------------------

    def _remember(self, prompt: Prompt, rows: list[list[int]], cache: Any) -> None:
        with self._lock:
            images = tuple(image_digest(image) for image in prompt.images)
            self._cache[next(self._cache_ids)] = _CacheEntry(images, rows, cache)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)

    def _lookup(self, images: tuple[str, ...], ids: list[int]) -> tuple[Any, int] | None:
        """A private copy of the kept cache row sharing the longest prefix with `ids` (at least one
        token short of the whole prompt, so the last position is computed and gives logits)."""
        best, best_key, best_row = 0, None, 0
        for key, entry in self._cache.items():
            if entry.images != images:
                continue
            for r, row in enumerate(entry.rows):
                common = _common_prefix(row, ids)
                if common > best:
                    best, best_key, best_row = common, key, r
        best = min(best, len(ids) - 1)
        if best_key is None or best < 1 or any(t in self._image_token_ids for t in ids[best:]):
            return None  # an image's placeholder tokens in the new part need the pixels: encode it all
        entry = self._cache[best_key]
        self._cache.move_to_end(best_key)
        cache = copy.deepcopy(entry.cache)
        if len(entry.rows) > 1:
            import torch

            cache.batch_select_indices(torch.tensor([best_row], device=self._device))
        _crop_self_attention(cache, best, self._cross_attention_layers)
        return cache, best

    # -- helpers ---------------------------------------------------------------------------------

    def _option_token_id(self, option: str) -> int:
        ids = self._tokenizer.encode(option, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"option {option!r} is {len(ids)} tokens for this model; choices must be one token")
        return ids[0]

    def _pad_id(self) -> int:
        pad = self._tokenizer.pad_token_id
        return pad if pad is not None else next(iter(self._eos_ids))


def _sample(logits: Any, settings: SamplingSettings, generator: Any) -> tuple[Any, Any]:
    """One token per row: greedy at temperature 0, else temperature and top-p sampling."""
    import torch

    logits = logits.float()
    logprobs = torch.log_softmax(logits, dim=-1)
    if settings.temperature <= 0.0:
        tokens = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / settings.temperature, dim=-1)
        if settings.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep = sorted_probs.cumsum(dim=-1) - sorted_probs < settings.top_p
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def _first_stop(text: str, stops: Sequence[str]) -> str | None:
    found = [(text.find(s), s) for s in stops if s in text]
    return min(found)[1] if found else None


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _crop_self_attention(cache: Any, length: int, cross_attention_layers: set[int]) -> None:
    """Crop the token axis of self-attention layers only: cross-attention layers (Mllama) hold the
    image's keys and values, whose length has nothing to do with the prompt's."""
    for index, layer in enumerate(cache.layers):
        if index not in cross_attention_layers and getattr(layer, "keys", None) is not None:
            layer.keys = layer.keys[..., :length, :]
            layer.values = layer.values[..., :length, :]


def _eos_ids(model: Any) -> set[int]:
    config = model.generation_config if getattr(model, "generation_config", None) else model.config
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = getattr(model.config.get_text_config(), "eos_token_id", None)
    return set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])


def _ones(batch: int, length: int, device: Any) -> Any:
    import torch

    return torch.ones(batch, length, dtype=torch.long, device=device)


def _arange(start: int, stop: int, device: Any) -> Any:
    import torch

    return torch.arange(start, stop, device=device)
