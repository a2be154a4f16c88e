"""Token ids of single-token options (the judge's "1" and "2"), shared by the engines' `choose`.

An option counts in two spellings: as given, and with a leading space, each where it is one token
(at least one must be: the verifier's "yes" is two tokens for the demo tokenizer, " yes" one).
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
        self._ids: dict[str, list[int]] = {}

    def ids_of_option(self, option: str) -> list[int]:
        """The one-token spellings of an option: as given, then space-led, where each is one token.
        At least one must be: "yes" may be two tokens where " yes" is one (the demo tokenizer)."""
        if option not in self._ids:
            ids = []
            for spelling in (option, f" {option}"):
                encoded = self._tokenizer.encode(spelling, add_special_tokens=False)
                if len(encoded) == 1 and encoded[0] not in ids:
                    ids.append(encoded[0])
            if not ids:
                raise ValueError(f"option {option!r} is not one token for this model, with or without a leading space")
            self._ids[option] = ids
        return self._ids[option]

    def spellings_of(self, options: Sequence[str]) -> OptionSpellings:
        """Each option's one-token spellings (at least two distinct options)."""
        if len(set(options)) < 2:
            raise ValueError("choose needs at least two distinct options")
        token_ids: list[int] = []
        owners: list[int] = []
        for index, option in enumerate(options):
            for token_id in self.ids_of_option(option):
                if token_id in token_ids:
                    raise ValueError(f"options {options!r} share a token")
                token_ids.append(token_id)
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
