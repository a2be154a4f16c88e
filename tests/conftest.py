"""Shared fixtures: one tiny model and one real vLLM-CPU engine for the whole test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))

# Small prefill budget: prompts longer than this are prefilled in chunks, which is the condition
# under which vLLM-CPU's seed bug fires (see models/vllm_seed_fix.py and test_seed_bug.py).
TEST_MAX_BATCHED_TOKENS = 512
TEST_ENGINE_OVERRIDES = {"max_num_batched_tokens": TEST_MAX_BATCHED_TOKENS, "max_model_len": 4096}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from models.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def engine(tiny_model_dir):
    from models.engine_config import engine_args_for
    from models.vllm_engine import VllmEngine

    vllm_engine = VllmEngine.from_engine_args(engine_args_for(str(tiny_model_dir), **TEST_ENGINE_OVERRIDES))
    yield vllm_engine
    await vllm_engine.shutdown()


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Environment for CLI subprocesses: a private model cache, the venv's scripts first on PATH."""
    env = dict(os.environ)
    env["LLAVA_O1_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env
