"""The CPU defaults the server puts on vLLM's engine arguments."""

from __future__ import annotations

import pytest

from models.engine_config import cpu_has_native_bf16, engine_args_for


@pytest.mark.parametrize(
    "features, native",
    [
        ({"avx512_bf16": False, "amx": False}, False),
        ({"avx512_bf16": True, "amx": False}, True),
        ({"avx512_bf16": False, "amx": True}, True),
    ],
)
def test_x86_has_native_bf16_only_with_avx512_bf16_or_amx(features, native):
    assert cpu_has_native_bf16("x86_64", features) is native


def test_other_architectures_keep_vllms_choice():
    assert cpu_has_native_bf16("aarch64", {"avx512_bf16": False, "amx": False}) is True


def test_cpu_defaults_pick_float32_without_native_bf16(tiny_model_dir):
    args = engine_args_for(str(tiny_model_dir))
    assert args.dtype == ("auto" if cpu_has_native_bf16() else "float32")
    assert args.block_size == 32


def test_an_explicit_dtype_is_kept(tiny_model_dir):
    assert engine_args_for(str(tiny_model_dir), dtype="bfloat16").dtype == "bfloat16"


async def test_the_running_engine_uses_the_chosen_dtype(engine):
    import torch

    expected = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert engine._llm.model_config.dtype == expected


def test_auto_picks_vllm_for_what_it_runs_and_hf_for_mllama(tiny_model_dir, tiny_mllama_dir):
    from models.engine_factory import pick_engine

    assert pick_engine("auto", str(tiny_model_dir))[0] == "vllm"
    kind, reason = pick_engine("auto", str(tiny_mllama_dir))
    assert kind == "hf" and "MllamaForConditionalGeneration" in reason
    assert pick_engine("hf", str(tiny_model_dir)) == ("hf", "asked for with --engine")
