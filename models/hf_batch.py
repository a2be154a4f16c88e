"""Micro-batching for the hf engine: the groups of several requests, with prompts of different
lengths, decoded together in one forward pass per token.

The groups' KV caches are joined into one, left-padded to the longest, with a padding mask and
per-row positions, and split back when the batch's membership changes (a group finishes, or new
ones join); between changes each step only appends. Groups whose cross-attention states have
different shapes (Mllama with other image counts or tiles) cannot share a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from models.hf_prefix_cache import layer_tensors
from models.hf_sequences import Group

if TYPE_CHECKING:
    import torch
    from transformers import DynamicCache, PreTrainedModel


def signature(group: Group, cross_layers: set[int]) -> tuple:
    """Groups with equal signatures can share a batch."""
    cache = own_cache(group)
    # A cross-attention layer is empty until the image has gone through it.
    shapes = tuple(
        tuple(layer_tensors(cache, i)[0].shape[1:])
        for i in sorted(cross_layers)
        if getattr(cache.layers[i], "keys", None) is not None
    )
    mask = None if group.cross_mask is None else tuple(group.cross_mask.shape[2:])
    return shapes, mask


def own_cache(group: Group) -> DynamicCache:
    """The cache of a group that is not in a batch."""
    assert group.cache is not None, "the group's cache is held by a batch"
    return group.cache


class Batch:
    """Groups decoded together. Owns their caches from construction until `split()`."""

    def __init__(
        self,
        groups: Sequence[Group],
        new_cache: Callable[[], DynamicCache],
        cross_layers: set[int],
        device: torch.device,
    ):
        import torch
        import torch.nn.functional as F

        self.groups = list(groups)
        self._cross_layers = cross_layers
        self._device = device
        self.width = max(g.length for g in self.groups)  # padded length of the joined cache
        self.cache: DynamicCache | None = new_cache()
        caches = [own_cache(g) for g in self.groups]
        for index in range(len(caches[0].layers)):
            keys, values = [], []
            for g, cache in zip(self.groups, caches, strict=True):
                layer_keys, layer_values = layer_tensors(cache, index)
                pad = 0 if index in cross_layers else self.width - g.length
                keys.append(F.pad(layer_keys, (0, 0, pad, 0)))
                values.append(F.pad(layer_values, (0, 0, pad, 0)))
            self.cache.update(torch.cat(keys), torch.cat(values), index)
        masks = []
        for g in self.groups:
            row = torch.zeros(g.n, self.width, dtype=torch.long, device=device)
            row[:, self.width - g.length :] = 1
            masks.append(row)
        self.mask = torch.cat(masks)
        cross_masks = [g.cross_mask for g in self.groups if g.cross_mask is not None]
        self.cross_mask = torch.cat(cross_masks) if cross_masks else None  # all or none: one signature
        for g in self.groups:
            g.cache = None

    def step(self, model: PreTrainedModel) -> list[torch.Tensor]:
        """Feed every group's next tokens; returns each group's logits [n, V]."""
        import torch

        tokens = torch.tensor([t for g in self.groups for t in g.next_tokens], device=self._device)[:, None]
        positions = torch.tensor([g.length for g in self.groups for _ in range(g.n)], device=self._device)[:, None]
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        kwargs = {} if self.cross_mask is None else {"cross_attention_mask": self.cross_mask}
        out = model(
            input_ids=tokens,
            past_key_values=self.cache,
            attention_mask=self.mask,
            position_ids=positions,
            cache_position=torch.tensor([self.width], device=self._device),
            use_cache=True,
            **kwargs,
        )
        self.cache = out.past_key_values
        self.width += 1
        logits, start = [], 0
        for g in self.groups:
            g.fed_next()
            logits.append(out.logits[start : start + g.n, -1, :])
            start += g.n
        return logits

    def split(self, new_cache: Callable[[], DynamicCache]) -> None:
        """Give each group its own cache back, without the padding."""
        assert self.cache is not None, "split twice"
        start = 0
        for g in self.groups:
            cache = new_cache()
            for index in range(len(self.cache.layers)):
                keys, values = layer_tensors(self.cache, index)
                keys, values = keys[start : start + g.n], values[start : start + g.n]
                if index not in self._cross_layers:
                    keys, values = keys[..., self.width - g.length :, :], values[..., self.width - g.length :, :]
                cache.update(keys, values, index)
            g.cache = cache
            start += g.n
        self.cache = None
