"""Token ids of single-token options (the judge's "1" and "2"), shared by the engines' `choose`.

An option counts in two spellings: as given, and with a leading space when that is one token too.
Chat templates often put a space between the assistant's header and its reply ("Assistant: 1"), so
a model trained on its template writes " 1", not "1", as the first token of its answer; reading
only "1" would ask about a token the model never learnt to put there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Encoder(Protocol):
    """What is needed of a tokenizer: transformers' and vLLM's both fit."""

    def encode(self, text: str, *, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class OptionSpellings:
    """The tokens a `choose` call reads, and for each token the index of the option it spells."""

    token_ids: list[int]
    owners: list[int]
    options: int

    def per_option(self, probabilities: Sequence[float]) -> list[float]:
        """Probabilities over `token_ids` (summing to 1) summed into one per option."""
        totals = [0.0] * self.options
        for owner, probability in zip(self.owners, probabilities, strict=True):
            totals[owner] += probability
        return totals


class OptionTokens:
    """Looks each option up once: the judge asks for the same few options in every match."""

    def __init__(self, tokenizer: Encoder):
        self._tokenizer = tokenizer
        self._ids: dict[str, int] = {}

    def id_of(self, option: str) -> int:
        """The id of an option that must encode to exactly one token."""
        if option not in self._ids:
            ids = self._tokenizer.encode(option, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"option {option!r} is {len(ids)} tokens for this model; choices must be one token")
            self._ids[option] = ids[0]
        return self._ids[option]

    def ids_of(self, options: Sequence[str]) -> list[int]:
        """The ids of a `choose` call's options (at least two, distinct)."""
        if len(set(options)) < 2:
            raise ValueError("choose needs at least two distinct options")
        return [self.id_of(option) for option in options]

    def spellings_of(self, options: Sequence[str]) -> OptionSpellings:
        """Each option's token, plus its space-led form where that is one other token."""
        ids = self.ids_of(options)
        token_ids, owners = list(ids), list(range(len(ids)))
        for index, option in enumerate(options):
            spaced = self._tokenizer.encode(f" {option}", add_special_tokens=False)
            if len(spaced) == 1 and spaced[0] not in token_ids:
                token_ids.append(spaced[0])
                owners.append(index)
        return OptionSpellings(token_ids, owners, len(options))


def softmax(logprobs: Sequence[float]) -> list[float]:
    """Log-probabilities of some tokens, renormalised to probabilities over just those tokens."""
    top = max(logprobs)
    if top == -math.inf:
        return [1.0 / len(logprobs)] * len(logprobs)
    weights = [math.exp(lp - top) for lp in logprobs]
    total = sum(weights)
    return [w / total for w in weights]
