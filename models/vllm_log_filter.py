"""Quiets vLLM's per-weight "Attempted to load weight ... with dtype ..." warnings.

vLLM warns once per weight whenever a checkpoint's dtype differs from the one the model runs in
(our float32 tiny models in bfloat16, on CPUs with native bfloat16): hundreds of lines before a
benchmark's table. `bench`, `eval` and `ask` turn this filter on unless given -v.

It is a vLLM general plugin (entry point in pyproject.toml) because the weights are loaded in a
worker process that vLLM starts; vLLM loads its plugins in every process it starts.
"""

from __future__ import annotations

import logging
import os

PLUGIN_NAME = "llava_o1_quiet_weight_warnings"
SWITCH = "LLAVA_O1_QUIET_WEIGHT_WARNINGS"  # "1": filter on (inherited by vLLM's processes)
WEIGHT_LOGGERS = ("vllm.model_executor.models.utils", "vllm.model_executor.model_loader.sharded_state_loader")


class PerWeightWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Attempted to load weight")


def set_quiet(quiet: bool) -> None:
    """Turn the filter on or off for the vLLM processes this process starts from now on."""
    os.environ[SWITCH] = "1" if quiet else "0"


def register() -> None:
    """vLLM plugin entry point: add the filter to the loggers that warn per weight, when asked."""
    if os.environ.get(SWITCH) != "1":
        return
    for name in WEIGHT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, PerWeightWarnings) for f in logger.filters):
            logger.addFilter(PerWeightWarnings())
