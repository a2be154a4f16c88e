"""Engine flags: vLLM's own argument parser (same flags as `vllm serve`), with defaults that run on a CPU.

We reuse `AsyncEngineArgs.add_cli_args` instead of re-declaring flags, so everything `vllm serve`
accepts (--tensor-parallel-size, --max-model-len, --dtype, --gpu-memory-utilization, ...) works
here too. Only the defaults change, and only where the stock ones do not suit this server:
  * prefix caching on (stage candidates and judge matches share long prefixes);
  * priority scheduling (the search gives later stages priority);
  * on a machine without a GPU, a fixed 1 GiB KV cache instead of vLLM's 92%-of-host-memory
    reservation, which fails at start-up on small machines, and KV blocks of 32 tokens instead of
    128: the prefix cache shares whole blocks only, and a search's prompts (candidates of a stage,
    judge matches) differ from each other after a shared prefix of a few hundred tokens (16 is
    refused by the CPU attention backend);
  * on an x86 CPU without native bfloat16 (no AVX512-BF16, no AMX), float32 instead of vLLM's
    "auto", which casts float32 checkpoints down to bfloat16 on every CPU: there torch runs
    bfloat16 matrix products in an emulated AVX2 loop.
What each of these was measured to gain: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs

    from models.command_parser import CommandParser

log = logging.getLogger(__name__)

CPU_KV_CACHE_BYTES = 1 << 30
CPU_BLOCK_SIZE = 32


def has_gpu() -> bool:
    """True when a CUDA device is visible (vLLM then uses its GPU defaults)."""
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def add_engine_arguments(parser: CommandParser) -> CommandParser:
    """Add vLLM's engine flags to `parser`, with this server's defaults. The command's own options
    are those added before this call: its help lists them first."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    from models.engine_factory import add_engine_choice

    parser.begin_engine_flags()
    AsyncEngineArgs.add_cli_args(parser)
    for action in add_engine_choice(parser):
        parser.add_own_action(action)
    parser.set_defaults(model=None, enable_prefix_caching=True, scheduling_policy="priority")
    return parser


def make_parser(prog: str, description: str | None = None, *, verbose_flag: bool = False) -> CommandParser:
    """A parser for a command that takes vLLM's engine flags (models/command_parser.py). With
    `verbose_flag`, -v shows vLLM's per-weight loading warnings (see parse_engine_command)."""
    from models.command_parser import CommandParser

    parser = CommandParser(prog, description)
    if verbose_flag:
        parser.add_argument(
            "-v", "--verbose", action="store_true", help="show vLLM's per-weight loading warnings (quiet by default)"
        )
    return parser


def parse_engine_command(
    build_parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str]
) -> argparse.Namespace:
    """Parse the flags of a command whose stdout is its result (ask, eval, bench): vLLM logs to
    stderr, warnings only, and its per-weight warnings are filtered out unless -v was given. Set
    before vLLM is imported and before the engine starts; vLLM's processes inherit both."""
    from models.vllm_log_filter import set_quiet

    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    args = build_parser().parse_args(list(argv))
    set_quiet(not args.verbose)
    return args


def engine_args_from(namespace: argparse.Namespace, model: str) -> AsyncEngineArgs:
    """Build `AsyncEngineArgs` from parsed flags for `model` (a local path or a hub id)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    namespace = argparse.Namespace(**vars(namespace))
    namespace.model = model
    engine_args = AsyncEngineArgs.from_cli_args(namespace)
    # Compact JSON under response_format (no whitespace between JSON tokens): a small model can
    # otherwise pad with whitespace until its token limit cuts the JSON. vLLM allows that only with a
    # named backend; "auto" becomes xgrammar, the one auto tries first.
    structured = engine_args.structured_outputs_config
    if structured.backend == "auto":
        structured.backend = "xgrammar"
    if structured.backend in ("xgrammar", "guidance"):
        structured.disable_any_whitespace = True
    if not has_gpu():
        apply_cpu_defaults(engine_args)
    return engine_args


def apply_cpu_defaults(engine_args: AsyncEngineArgs) -> None:
    """CPU defaults where the user chose nothing: KV cache size (flag or VLLM_CPU_KVCACHE_SPACE), block
    size, and float32 where the CPU has no native bfloat16."""
    if engine_args.kv_cache_memory_bytes is None and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
        engine_args.kv_cache_memory_bytes = CPU_KV_CACHE_BYTES
    if engine_args.block_size is None:
        engine_args.block_size = CPU_BLOCK_SIZE
    if engine_args.dtype == "auto" and not cpu_has_native_bf16():
        log.info("llava-o1: this CPU has no native bfloat16 (AVX512-BF16 or AMX); running the model in float32")
        engine_args.dtype = "float32"


def cpu_has_native_bf16(machine: str | None = None, features: dict[str, bool] | None = None) -> bool:
    """Whether bfloat16 matrix products run natively here. Only x86 is judged (AVX512-BF16 or AMX);
    other architectures are assumed to have it, which leaves vLLM's own choice in place."""
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return True
    if features is None:
        import torch

        # Private but stable probes (torch/cpu/__init__.py); a torch without them is treated as lacking both.
        probe = lambda name: bool(getattr(torch.cpu, name, lambda: False)())
        features = {"avx512_bf16": probe("_is_avx512_bf16_supported"), "amx": probe("_is_amx_tile_supported")}
    return any(features.values())


def engine_args_for(model: str, **overrides: Any) -> AsyncEngineArgs:
    """Engine args for `model` with this server's defaults, without a command line (tests, scripts)."""
    parser = add_engine_arguments(make_parser("llava-o1"))
    namespace = parser.parse_args([])
    for key, value in overrides.items():
        setattr(namespace, key, value)
    return engine_args_from(namespace, model)
