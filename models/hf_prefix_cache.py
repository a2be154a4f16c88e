"""The hf engine's kept KV caches: finished sequences' caches, kept in a small LRU, so a prompt that
starts like an earlier sequence (the next stage continues the winner; a judge match continues the
conversation) only encodes what is new."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache

CACHE_ENTRIES = 32  # finished KV caches kept for prefix reuse


@dataclass
class _Entry:
    images: tuple[str, ...]  # digests of the prompt's images: their tokens look alike, their pixels not
    rows: list[list[int]]  # per row, the token ids whose keys and values the cache holds
    cache: DynamicCache  # one row per entry of `rows`


class PrefixCache:
    """An LRU of kept caches, and the lookup of the longest kept prefix of a new prompt."""

    def __init__(
        self,
        new_cache: Callable[[], DynamicCache],
        cross_attention_layers: set[int],
        image_token_ids: set[int],
        entries: int = CACHE_ENTRIES,
    ):
        self._new_cache = new_cache
        self._cross_attention_layers = cross_attention_layers
        self._image_token_ids = image_token_ids
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._keys = itertools.count()
        self.capacity = entries
        self.queried_tokens = 0  # prompt tokens looked up, since start
        self.hit_tokens = 0  # of those, found in a kept cache

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def remember(self, images: tuple[str, ...], rows: list[list[int]], cache: DynamicCache) -> None:
        self._entries[next(self._keys)] = _Entry(images, rows, cache)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def lookup(self, images: tuple[str, ...], ids: list[int]) -> tuple[DynamicCache, int] | None:
        """A private copy of the kept cache row sharing the longest prefix with `ids` (at least one
        token short of the whole prompt, so the last position is computed and gives logits), and
        that prefix's length; None when nothing useful is kept."""
        self.queried_tokens += len(ids)
        best, best_key, best_row = 0, None, 0
        for key, entry in self._entries.items():
            if entry.images != images:
                continue
            for r, row in enumerate(entry.rows):
                common = _common_prefix(row, ids)
                if common > best:
                    best, best_key, best_row = common, key, r
        best = min(best, len(ids) - 1)
        if best_key is None or best < 1 or any(t in self._image_token_ids for t in ids[best:]):
            return None  # an image's placeholder tokens in the new part need the pixels: encode it all
        entry = self._entries[best_key]
        self._entries.move_to_end(best_key)
        # Copy only that row, and of self-attention layers only the shared prefix: cross-attention
        # layers (Mllama) hold the image's keys and values, whose length is not the prompt's.
        cache = self._new_cache()
        for index in range(len(entry.cache.layers)):
            keys, values = layer_tensors(entry.cache, index)
            keys, values = keys[best_row : best_row + 1], values[best_row : best_row + 1]
            if index not in self._cross_attention_layers:
                keys, values = keys[..., :best, :], values[..., :best, :]
            cache.update(keys.clone(), values.clone(), index)
        self.hit_tokens += best
        return cache, best


def layer_tensors(cache: DynamicCache, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values of one filled layer of a cache (transformers types them as optional)."""
    layer = cache.layers[index]
    keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
    assert keys is not None and values is not None, f"layer {index} of the cache is empty"
    return keys, values


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
