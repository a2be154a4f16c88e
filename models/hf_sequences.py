"""The hf engine's sequences: one `Group` per `generate` call (its N candidates), sampled token by
token, with stop strings checked on newly decoded text only."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.engine import Candidate, FinishReason, Generation, Prompt, SamplingSettings

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedTokenizerBase

    from models.hf_engine import _Call


class IncrementalText:
    """Decodes one row's tokens as they come, looking only at a short window of recent tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self._tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""
        self._prefix = 0  # window start
        self._read = 0  # tokens already turned into text

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if after.endswith("\ufffd"):  # an unfinished multi-byte character: wait for the rest
            return ""
        delta = after[len(before) :]
        self._prefix, self._read = self._read, len(self.ids)
        self.text += delta
        return delta

    def _decode(self, ids: list[int]) -> str:
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one sequence in, one string out
        return text


class Group:
    """The N rows of one generate call: what they wrote, why they ended, and the KV cache they own
    while they are not part of a batch (models/hf_batch.py)."""

    def __init__(
        self,
        *,
        job_id: str,
        settings: SamplingSettings,
        prompt: Prompt,
        prompt_ids: list[int],
        cached_tokens: int,
        cache: DynamicCache,
        cross_mask: torch.Tensor | None,
        tokenizer: PreTrainedTokenizerBase,
        eos_ids: set[int],
        pad_id: int,
    ):
        import torch

        n = settings.n
        self.job_id, self.settings, self.prompt = job_id, settings, prompt
        self.prompt_ids, self.cached_tokens = prompt_ids, cached_tokens
        # The cache is the group's own while it is not in a batch (None while a Batch holds it).
        self.cache: DynamicCache | None = cache
        self.length = len(prompt_ids)  # tokens whose keys and values the cache holds
        # Mllama: every new token attends to the image as the prompt's last token did.
        self.cross_mask = None if cross_mask is None else cross_mask[:, -1:].expand(n, 1, *cross_mask.shape[2:])
        self.call: _Call | None = None  # the engine's record of the caller, for delivering the result
        self.signature: tuple = ()  # which groups it can share a batch with (models/hf_batch.py)
        self.rows = [IncrementalText(tokenizer) for _ in range(n)]
        self.finish: list[FinishReason | None] = [None] * n
        self.stop_reason: list[str | None] = [None] * n
        self.logprob = [0.0] * n
        self.fed = [list(prompt_ids) for _ in range(n)]  # per row, the ids the cache holds keys for
        self.next_tokens: list[int] = []
        self._eos_ids, self._pad_id = eos_ids, pad_id
        self._longest_stop = max((len(s) for s in settings.stop), default=0)
        self.generator = torch.Generator()
        self.generator.manual_seed(settings.seed if settings.seed is not None else random.getrandbits(63))
        self.aborted = False

    @property
    def n(self) -> int:
        return self.settings.n

    @property
    def done(self) -> bool:
        return self.aborted or all(f is not None for f in self.finish)

    def accept(self, logits: torch.Tensor) -> None:
        """Sample one token per row from `logits` [n, V]; set the tokens to feed next."""
        sampled, sampled_logprobs = sample(logits, self.settings, self.generator)
        tokens, logprobs = sampled.tolist(), sampled_logprobs.tolist()
        for r in range(self.n):
            if self.finish[r] is None:
                self._add(r, tokens[r], logprobs[r])
        self.next_tokens = [tokens[r] if self.finish[r] is None else self._pad_id for r in range(self.n)]

    def fed_next(self) -> None:
        """The next tokens went through the model: the cache now holds them."""
        for r in range(self.n):
            if self.finish[r] is None:
                self.fed[r].append(self.next_tokens[r])
        self.length += 1

    def _add(self, r: int, token: int, logprob: float) -> None:
        settings, row = self.settings, self.rows[r]
        self.logprob[r] += logprob
        if token in self._eos_ids and not settings.ignore_eos:
            row.ids.append(token)
            self.finish[r] = "stop"
            return
        delta = row.add(token)
        if delta and settings.stop:
            window = row.text[-(len(delta) + self._longest_stop) :]
            hit = first_stop(window, settings.stop)
            if hit is not None:
                row.text = row.text[: len(row.text) - len(window) + window.index(hit)]
                self.finish[r], self.stop_reason[r] = "stop", hit
                return
        if len(row.ids) >= settings.max_tokens:
            self.finish[r] = "length"

    def result(self) -> Generation:
        return Generation(
            tuple(
                Candidate(
                    text=row.text,
                    num_tokens=len(row.ids),
                    cumulative_logprob=self.logprob[r] if self.settings.logprobs else None,
                    finish_reason=self.finish[r] or "abort",
                    stop_reason=self.stop_reason[r],
                )
                for r, row in enumerate(self.rows)
            ),
            len(self.prompt_ids),
            self.cached_tokens,
        )


def sample(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row: greedy at temperature 0, else temperature and top-p sampling.
    Returns (tokens, their log-probabilities under the unmodified distribution)."""
    import torch

    logits = logits.float().cpu()
    logprobs = torch.log_softmax(logits, dim=-1)
    if settings.temperature <= 0.0:
        tokens = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / settings.temperature, dim=-1)
        if settings.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep = sorted_probs.cumsum(dim=-1) - sorted_probs < settings.top_p
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
        tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    return tokens, logprobs.gather(-1, tokens[:, None]).squeeze(-1)


def first_stop(text: str, stops: Sequence[str]) -> str | None:
    found = [(text.find(s), s) for s in stops if s in text]
    return min(found)[1] if found else None
