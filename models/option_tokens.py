"""Token ids of single-token options (the judge's "1" and "2"), shared by the engines' `choose`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Encoder(Protocol):
    """What is needed of a tokenizer: transformers' and vLLM's both fit."""

    def encode(self, text: str, *, add_special_tokens: bool = ...) -> list[int]: ...


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
