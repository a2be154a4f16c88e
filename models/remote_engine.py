"""The engine contract over the network, on a vLLM OpenAI-compatible server: `vllm serve`, or anything
that speaks its API in front of a fleet of them (vllm-router, production-stack, llm-d).

One search is many engine requests (about 28 at beam width 4) on one image and one growing prefix:
- every request of a search carries one routing key (`X-Session-ID: <job id>` by default), so a
  consistent-hash router keeps the whole search on one replica and its prefix cache;
- the image crosses the wire once per search: its first request sends it with a `uuid` (the
  image's digest), later ones send the uuid alone and the engine takes the image from its cache.
  A replica that does not hold it (evicted, or the search moved) answers "cache miss"; that
  request is sent again with the image.

Prompts are not rendered here: `render` keeps the messages and the assistant prefix, and the
engine renders them with its own chat template (`continue_final_message`). Abort is closing the
request: vLLM aborts the work of a client that went away.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

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

log = logging.getLogger(__name__)

DEFAULT_SESSION_HEADER = "X-Session-ID"
# Searches whose images the engine holds, remembered per search (a new search may land elsewhere).
_REMEMBERED_SEARCHES = 4096
_ENCODED_IMAGES = 64
_CACHE_MISS_WORDS = "cache miss"
STATS_POLL_S = 1.0
HEALTH_PATHS = ("/health", "/readiness")


@dataclass(frozen=True)
class RemotePrompt(Prompt):
    """A prompt for the remote engine: the messages and the assistant text to continue, rendered
    by the engine itself. `text` stays empty."""

    messages: tuple[ChatMessage, ...] = ()
    assistant_prefix: str = ""


class _Aborted(Exception):
    """The job's request was closed by `abort`."""


class RemoteEngine(Engine):
    """One model on a vLLM OpenAI-compatible server (or a router in front of several)."""

    outlives_engine_outages = True

    def __init__(
        self,
        url: str,
        model_name: str,
        max_model_len: int,
        *,
        api_key: str | None = None,
        session_header: str = DEFAULT_SESSION_HEADER,
        send_priority: bool = False,
    ):
        self.url = url.rstrip("/")
        self.model_name = model_name
        self.max_model_len = max_model_len
        self._session_header = session_header
        # vLLM refuses a non-zero priority unless it runs `--scheduling-policy priority`.
        self._send_priority = send_priority
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # No read timeout: a long stage is a long wait for the first byte of a non-streamed answer.
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(None, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        self._token_ids: dict[str, list[int]] = {}
        self._images_held: OrderedDict[str, set[str]] = OrderedDict()  # job id -> image digests
        self._encoded: OrderedDict[str, str] = OrderedDict()  # image digest -> data URL
        self._closers: dict[str, set[Callable[[], object]]] = defaultdict(set)
        self._stats = EngineStats()
        self._stats_task: asyncio.Task | None = None
        self._closed = False
        self._wire = {"requests": 0, "bytes": 0, "image_uploads": 0, "image_bytes": 0}

    @classmethod
    def connect(
        cls,
        url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        wait_s: float = 300.0,
        **options: Any,
    ) -> RemoteEngine:
        """Wait (up to `wait_s`) for the server to list its models; serve `model`, or its first one."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        deadline = time.monotonic() + wait_s
        while True:
            try:
                response = httpx.get(f"{url.rstrip('/')}/v1/models", headers=headers, timeout=10)
                response.raise_for_status()
                listed = response.json()["data"]
                break
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                if time.monotonic() > deadline:
                    raise EngineError(f"no engine answered at {url} within {wait_s:g} s: {exc}") from exc
                log.info("waiting for the engine at %s (%s)", url, exc)
                time.sleep(2.0)
        names = [entry["id"] for entry in listed]
        entry = next((e for e in listed if e["id"] == model), None) if model else (listed[0] if listed else None)
        if entry is None:
            raise EngineError(f"the engine at {url} serves {names}, not {model!r}")
        return cls(url, entry["id"], int(entry.get("max_model_len") or 0), api_key=api_key, **options)

    # -- prompts -------------------------------------------------------------------------------

    def render(self, messages: Sequence[ChatMessage], assistant_prefix: str = "") -> Prompt:
        if not messages:
            raise ValueError("at least one message is needed")
        images = tuple(
            p.image for m in messages if not isinstance(m.content, str) for p in m.content if p.image is not None
        )
        return RemotePrompt(text="", images=images, messages=tuple(messages), assistant_prefix=assistant_prefix)

    # -- requests ------------------------------------------------------------------------------

    async def generate(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> Generation:
        # As vLLM's own engine: greedy gives n equal candidates, and vLLM refuses n > 1 at temperature 0.
        copies = settings.n if settings.temperature <= 0.0 else 1
        if copies > 1:
            settings = dataclasses.replace(settings, n=1)
        body = _sampling_fields(settings)
        try:
            answer = await self._call(prompt, body, job_id, priority)
        except _Aborted:
            aborted = Candidate("", 0, None, "abort")
            return Generation((aborted,) * (settings.n * copies), 0, 0)
        top = settings.token_logprobs
        choices = sorted(answer["choices"], key=lambda c: c["index"])
        candidates = tuple(_candidate(c, c["message"].get("content") or "", top) for c in choices)
        prompt_tokens, cached = _usage(answer)
        return Generation(candidates * copies, prompt_tokens, cached)

    async def stream(
        self, prompt: Prompt, settings: SamplingSettings, *, job_id: str, priority: int = 0
    ) -> AsyncIterator[StreamDelta]:
        if settings.n != 1:
            raise ValueError("stream samples exactly one candidate")
        body = {**_sampling_fields(settings), "stream": True, "stream_options": {"include_usage": True}}
        text = ""
        token_ids: list[int] = []
        steps: list[dict] = []
        finished: dict | None = None
        usage: tuple[int, int] = (0, 0)
        try:
            async for chunk in self._stream_call(prompt, body, job_id, priority):
                if chunk.get("usage"):
                    usage = _usage(chunk)
                for choice in chunk.get("choices") or ():
                    piece = (choice.get("delta") or {}).get("content") or ""
                    text += piece
                    token_ids += choice.get("token_ids") or ()
                    steps += (choice.get("logprobs") or {}).get("content") or ()
                    if choice.get("finish_reason"):
                        finished = choice
                    if piece:
                        yield StreamDelta(piece)
        except _Aborted:
            yield StreamDelta("", Candidate(text, len(token_ids), None, "abort"))
            return
        if finished is None:
            raise EngineError("the engine's stream ended without a finish")
        whole = {**finished, "token_ids": token_ids, "logprobs": {"content": steps} if steps else None}
        yield StreamDelta("", _candidate(whole, text, settings.token_logprobs), *usage)

    async def choose(self, prompt: Prompt, options: Sequence[str], *, job_id: str, priority: int = 0) -> ChoiceResult:
        spellings = OptionTokens(await self._encoder_for(options)).spellings_of(options)
        ids = spellings.token_ids
        body = {
            "max_tokens": 1,
            "temperature": 0.0,
            "allowed_token_ids": ids,
            # Raw log-probabilities of exactly these tokens, named by id; renormalised below.
            "logprobs": True,
            "top_logprobs": len(ids),
            "logprob_token_ids": ids,
            "return_tokens_as_token_ids": True,
        }
        try:
            answer = await self._call(prompt, body, job_id, priority)
        except _Aborted:
            raise asyncio.CancelledError(f"choice for job {job_id} was aborted") from None
        content = ((answer["choices"][0].get("logprobs") or {}).get("content")) or []
        if not content:
            raise EngineError("the engine returned no log-probabilities for a choice")
        by_id = {_token_id(entry["token"]): entry["logprob"] for entry in content[0].get("top_logprobs") or ()}
        logprobs = [by_id.get(token_id, -math.inf) for token_id in ids]
        prompt_tokens, cached = _usage(answer)
        return ChoiceResult(
            dict(zip(options, spellings.per_option(softmax(logprobs)), strict=True)), prompt_tokens, cached
        )

    async def count_tokens(self, text: str) -> int:
        return len(await self._tokenize(text))

    async def abort(self, job_id: str) -> None:
        for close in list(self._closers.get(job_id, ())):
            close()

    # -- the wire ------------------------------------------------------------------------------

    async def _call(self, prompt: Prompt, fields: dict, job_id: str, priority: int) -> dict:
        """One non-streamed chat completion; its JSON. Raises _Aborted if `abort` closed it."""
        task = asyncio.ensure_future(self._post_json(prompt, fields, job_id, priority))
        closers = self._closers[job_id]
        closers.add(task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and current.cancelling() == 0:
                raise _Aborted() from None
            raise
        finally:
            closers.discard(task.cancel)
            if not closers:
                self._closers.pop(job_id, None)

    async def _post_json(self, prompt: Prompt, fields: dict, job_id: str, priority: int) -> dict:
        response = await self._send(prompt, fields, job_id, priority, stream=False)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response.json()

    async def _stream_call(self, prompt: Prompt, fields: dict, job_id: str, priority: int) -> AsyncIterator[dict]:
        """The chunks of one streamed chat completion. Raises _Aborted if `abort` closed it.

        A task of its own reads the response, so that `abort` can stop the reading (and so close the
        request) without cancelling the caller."""
        response = await self._send(prompt, fields, job_id, priority, stream=True)
        chunks: asyncio.Queue[dict | BaseException | None] = asyncio.Queue()
        reader = asyncio.ensure_future(self._read_stream(response, chunks))
        closers = self._closers[job_id]
        closers.add(reader.cancel)
        try:
            while (item := await chunks.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            closers.discard(reader.cancel)
            if not closers:
                self._closers.pop(job_id, None)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _read_stream(self, response: httpx.Response, chunks: asyncio.Queue) -> None:
        """Put each SSE chunk of `response` on `chunks`, then None; an error or an abort as an exception."""
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
                    chunks.put_nowait(vllm_refusal(error.get("message", data), error.get("param")))
                    return
                chunks.put_nowait(chunk)
            chunks.put_nowait(None)
        except asyncio.CancelledError:
            chunks.put_nowait(_Aborted())
            raise
        except (httpx.HTTPError, ValueError) as exc:
            chunks.put_nowait(EngineError(f"the engine at {self.url} cut a stream: {exc!r}"))
        finally:
            await response.aclose()

    async def _send(self, prompt: Prompt, fields: dict, job_id: str, priority: int, *, stream: bool) -> httpx.Response:
        """POST a chat completion (headers read, body not yet); errors mapped to the contract's. A
        cache miss on the image is sent again with the image."""
        if not isinstance(prompt, RemotePrompt):
            raise TypeError("the remote engine takes prompts from its own render()")
        self._ensure_stats_polling()
        every_image = {image_digest(image) for image in prompt.images}
        with_images = every_image - self._images_held.get(job_id, set())
        for attempt in range(2):
            body = self._body(prompt, fields, with_images, priority)
            response = await self._post(body, job_id, stream)
            if response.status_code == 200:
                self._remember_images(job_id, prompt)
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
            error = _error_of(response)
            message = error.get("message", response.text[:500])
            if attempt == 0 and with_images != every_image and _is_cache_miss(message):
                log.info("the engine no longer holds an image of %s; sending it again", job_id)
                with_images = every_image
                continue
            if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 404, 408, 429):
                raise vllm_refusal(message, error.get("param"))
            raise EngineError(f"the engine at {self.url} answered {response.status_code}: {message}")
        raise AssertionError("unreachable")

    async def _post(self, body: dict, job_id: str, stream: bool) -> httpx.Response:
        content = json.dumps(body, separators=(",", ":")).encode()
        self._wire["requests"] += 1
        self._wire["bytes"] += len(content)
        headers = {self._session_header: job_id, "Content-Type": "application/json"}
        url = f"{self.url}/v1/chat/completions"
        request = self._client.build_request("POST", url, content=content, headers=headers)
        try:
            return await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise EngineError(f"the engine at {self.url} is unreachable: {exc!r}") from exc

    def _body(self, prompt: RemotePrompt, fields: dict, with_images: set[str], priority: int) -> dict:
        messages = [self._wire_message(m, with_images) for m in prompt.messages]
        body: dict[str, Any] = {"model": self.model_name, "messages": messages, **fields}
        if prompt.assistant_prefix:
            messages.append({"role": "assistant", "content": prompt.assistant_prefix})
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        if self._send_priority and priority:
            body["priority"] = priority
        return body

    def _wire_message(self, message: ChatMessage, with_images: set[str]) -> dict:
        if isinstance(message.content, str):
            return {"role": message.role, "content": message.content}
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if part.image is None:
                parts.append({"type": "text", "text": part.text})
                continue
            digest = image_digest(part.image)
            url = self._data_url(digest, part.image) if digest in with_images else None
            if url is not None:
                self._wire["image_uploads"] += 1
                self._wire["image_bytes"] += len(url)
            parts.append({"type": "image_url", "image_url": {"url": url} if url else None, "uuid": digest})
        return {"role": message.role, "content": parts}

    def _data_url(self, digest: str, image) -> str:
        url = self._encoded.get(digest)
        if url is None:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
            self._encoded[digest] = url
            while len(self._encoded) > _ENCODED_IMAGES:
                self._encoded.popitem(last=False)
        self._encoded.move_to_end(digest)
        return url

    def _remember_images(self, job_id: str, prompt: Prompt) -> None:
        if not prompt.images:
            return
        held = self._images_held.setdefault(job_id, set())
        held.update(image_digest(image) for image in prompt.images)
        self._images_held.move_to_end(job_id)
        while len(self._images_held) > _REMEMBERED_SEARCHES:
            self._images_held.popitem(last=False)

    async def _tokenize(self, text: str) -> list[int]:
        body = {"model": self.model_name, "prompt": text, "add_special_tokens": False}
        try:
            response = await self._client.post(f"{self.url}/tokenize", json=body, timeout=30)
        except httpx.HTTPError as exc:
            raise EngineError(f"the engine at {self.url} is unreachable: {exc!r}") from exc
        if response.status_code != 200:
            raise EngineError(f"the engine at {self.url} answered {response.status_code} to /tokenize")
        return list(response.json()["tokens"])

    async def _encoder_for(self, options: Sequence[str]) -> _KnownTokens:
        """A tokenizer for the options and their space-led forms, asked of the engine once each."""
        for text in [*options, *(f" {o}" for o in options)]:
            if text not in self._token_ids:
                self._token_ids[text] = await self._tokenize(text)
        return _KnownTokens(self._token_ids)

    # -- health and statistics -----------------------------------------------------------------

    async def is_healthy(self) -> bool:
        if self._closed:
            return False
        self._ensure_stats_polling()
        # A vLLM server answers /health. vllm-router answers /health with 503 as soon as one of its
        # workers is down, and /readiness with 200 while any is up: that is "can serve" for us.
        for path in HEALTH_PATHS:
            try:
                response = await self._client.get(f"{self.url}{path}", timeout=5)
            except httpx.HTTPError:
                return False
            if response.status_code == 200:
                return True
        return False

    def stats(self) -> EngineStats:
        wire = self._wire
        return dataclasses.replace(
            self._stats,
            wire_requests=wire["requests"],
            wire_bytes=wire["bytes"],
            wire_image_uploads=wire["image_uploads"],
            wire_image_bytes=wire["image_bytes"],
        )

    def num_unfinished_requests(self) -> int:
        """Requests this front end has open with the engine."""
        return sum(len(closers) for closers in self._closers.values())

    def _ensure_stats_polling(self) -> None:
        if self._stats_task is None and not self._closed:
            self._stats_task = asyncio.ensure_future(self._poll_stats())

    async def _poll_stats(self) -> None:
        """The engine's load from its Prometheus text, every second (behind a router, whose /metrics
        has no vLLM series, the figures stay zero)."""
        while not self._closed:
            try:
                response = await self._client.get(f"{self.url}/metrics", timeout=5)
                if response.status_code == 200:
                    self._stats = stats_from_metrics(response.text)
            except (httpx.HTTPError, ValueError):  # away for now, or not Prometheus text: keep the last
                pass
            await asyncio.sleep(STATS_POLL_S)

    async def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._stats_task is not None:
            self._stats_task.cancel()
        await self._client.aclose()


class _KnownTokens:
    """A tokenizer over texts already tokenized by the engine (for OptionTokens)."""

    def __init__(self, known: dict[str, list[int]]):
        self._known = known

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self._known[text]


def stats_from_metrics(text: str) -> EngineStats:
    """Load figures from vLLM's /metrics (summed over its engines and label sets)."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("vllm:"):
                totals[sample.name] += sample.value
    return EngineStats(
        running_requests=int(totals["vllm:num_requests_running"]),
        waiting_requests=int(totals["vllm:num_requests_waiting"]),
        kv_cache_usage=min(1.0, totals["vllm:kv_cache_usage_perc"]),
        prefix_cache_queries=int(totals["vllm:prefix_cache_queries_total"]),
        prefix_cache_hits=int(totals["vllm:prefix_cache_hits_total"]),
    )


def _sampling_fields(settings: SamplingSettings) -> dict[str, Any]:
    """vLLM's chat request fields for these settings (those at vLLM's default are left out)."""
    controls = settings.controls
    fields: dict[str, Any] = {
        "n": settings.n,
        "max_tokens": settings.max_tokens,
        "temperature": settings.temperature,
        "top_p": settings.top_p,
        "return_token_ids": True,  # each candidate's token count
    }
    optional = {
        "seed": settings.seed,
        "stop": list(settings.stop) or None,
        "ignore_eos": settings.ignore_eos or None,
        "presence_penalty": controls.presence_penalty or None,
        "frequency_penalty": controls.frequency_penalty or None,
        "repetition_penalty": controls.repetition_penalty if controls.repetition_penalty != 1.0 else None,
        "top_k": controls.top_k or None,
        "min_p": controls.min_p or None,
        "logit_bias": {str(t): b for t, b in controls.logit_bias} or None,
    }
    fields |= {name: value for name, value in optional.items() if value is not None}
    if settings.token_logprobs is not None:
        fields |= {"logprobs": True, "top_logprobs": settings.token_logprobs}
    elif settings.logprobs:
        fields |= {"logprobs": True, "top_logprobs": 0}
    if settings.json_schema is not None:
        fields["response_format"] = (
            {"type": "json_schema", "json_schema": {"name": "answer", "schema": settings.json_schema}}
            if settings.json_schema
            else {"type": "json_object"}
        )
    if not settings.use_prefix_cache:
        # A salt of its own: no other request's cached prefix matches (vLLM's per-request switch).
        fields["cache_salt"] = f"unshared-{time.monotonic_ns()}"
    return fields


def _candidate(choice: dict, text: str, top: int | None) -> Candidate:
    steps = (choice.get("logprobs") or {}).get("content") or None
    stop_reason = choice.get("stop_reason")
    return Candidate(
        text=text,
        num_tokens=len(choice.get("token_ids") or ()),
        cumulative_logprob=sum(step["logprob"] for step in steps) if steps else None,
        finish_reason=finish_reason_of(choice.get("finish_reason")),
        stop_reason=stop_reason if isinstance(stop_reason, str) else None,
        token_logprobs=None if top is None or steps is None else tuple(_token_logprob(step, top) for step in steps),
    )


def _token_logprob(step: dict, top: int) -> TokenLogprob:
    alternatives = tuple((alt["token"], alt["logprob"]) for alt in (step.get("top_logprobs") or ())[:top])
    return TokenLogprob(step["token"], step["logprob"], alternatives)


def _usage(answer: dict) -> tuple[int, int]:
    """(prompt tokens, cached prompt tokens) of an answer."""
    usage = answer.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return int(usage.get("prompt_tokens") or 0), int(details.get("cached_tokens") or 0)


def _token_id(token: str) -> int:
    """vLLM's `return_tokens_as_token_ids` spelling, "token_id:123"."""
    return int(token.rsplit(":", 1)[1])


def _error_of(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    return error if isinstance(error, dict) else {"message": str(error)}


def _is_cache_miss(message: str) -> bool:
    return _CACHE_MISS_WORDS in message.lower()
