"""Micro-batching for the hf engine: the groups of several requests, with prompts of different
lengths, decoded together in one forward pass per token.

The groups' KV caches are joined into one, left-padded to the longest, with a padding mask and
per-row positions, and split back when the batch's membership changes (a group finishes, or new
ones join); between changes each step only appends. Groups whose cross-attention states have
different shapes (Mllama with other image counts or tiles) cannot share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.hf_sequences import Group


def signature(group: Group, cross_layers: set[int]) -> tuple:
    """Groups with equal signatures can share a batch."""
    shapes = tuple(tuple(group.cache.layers[i].keys.shape[1:]) for i in sorted(cross_layers)
                   if getattr(group.cache.layers[i], "keys", None) is not None)
    mask = None if group.cross_mask is None else tuple(group.cross_mask.shape[2:])
    return shapes, mask


class Batch:
    """Groups decoded together. Owns their caches from construction until `split()`."""

    def __init__(self, groups: Sequence[Group], new_cache: Any, cross_layers: set[int], device: Any):
        import torch
        import torch.nn.functional as F

        self.groups = list(groups)
        self._cross_layers = cross_layers
        self._device = device
        self.width = max(g.length for g in self.groups)  # padded length of the joined cache
        self.cache = new_cache()
        for index in range(len(self.groups[0].cache.layers)):
            keys, values = [], []
            for g in self.groups:
                layer = g.cache.layers[index]
                pad = 0 if index in cross_layers else self.width - g.length
                keys.append(F.pad(layer.keys, (0, 0, pad, 0)))
                values.append(F.pad(layer.values, (0, 0, pad, 0)))
            self.cache.update(torch.cat(keys), torch.cat(values), index)
        masks = []
        for g in self.groups:
            row = torch.zeros(g.n, self.width, dtype=torch.long, device=device)
            row[:, self.width - g.length:] = 1
            masks.append(row)
        self.mask = torch.cat(masks)
        self.cross_mask = (torch.cat([g.cross_mask for g in self.groups])
                           if self.groups[0].cross_mask is not None else None)
        for g in self.groups:
            g.cache = None

    def step(self, model: Any) -> list[Any]:
        """Feed every group's next tokens; returns each group's logits [n, V]."""
        import torch

        tokens = torch.tensor([t for g in self.groups for t in g.next_tokens], device=self._device)[:, None]
        positions = torch.tensor([g.length for g in self.groups for _ in range(g.n)], device=self._device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        kwargs = {} if self.cross_mask is None else {"cross_attention_mask": self.cross_mask}
        out = model(input_ids=tokens, past_key_values=self.cache, attention_mask=self.mask, position_ids=positions,
                    cache_position=torch.tensor([self.width], device=self._device), use_cache=True, **kwargs)
        self.cache = out.past_key_values
        self.width += 1
        logits, start = [], 0
        for g in self.groups:
            g.fed_next()
            logits.append(out.logits[start:start + g.n, -1, :])
            start += g.n
        return logits

    def split(self, new_cache: Any) -> None:
        """Give each group its own cache back, without the padding."""
        start = 0
        for g in self.groups:
            cache = new_cache()
            for index, layer in enumerate(self.cache.layers):
                keys, values = layer.keys[start:start + g.n], layer.values[start:start + g.n]
                if index not in self._cross_layers:
                    keys, values = keys[..., self.width - g.length:, :], values[..., self.width - g.length:, :]
                cache.update(keys, values, index)
            g.cache = cache
            start += g.n
        self.cache = None
