"""The GPU collector: silent absence without a driver, and per-device series when NVML answers."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from server.gpu_metrics import GPU_METRIC_NAMES, GpuCollector


def samples(collector):
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in collector.collect() for s in family.samples
    }


def test_without_a_driver_only_the_count_is_exported_as_zero(caplog):
    # This machine has nvidia-ml-py installed but no NVIDIA driver: nvmlInit fails.
    collector = GpuCollector()
    with caplog.at_level(logging.INFO):
        for _ in range(3):  # repeated scrapes
            assert samples(collector) == {("llava_o1_gpu_count", ()): 0.0}
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]


class FakeNvml:
    """Answers like NVML with two devices; the second cannot report power."""

    NVML_TEMPERATURE_GPU = 0
    inits = 0

    def nvmlInit(self):
        FakeNvml.inits += 1

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}"

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=50 + handle)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=1 << 30, total=80 << 30)

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle == 1:
            raise RuntimeError("not supported")
        return 350_000

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 60 + handle


def test_devices_are_labelled_by_index_and_uuid_in_base_units():
    collector = GpuCollector(nvml=FakeNvml())
    got = samples(collector)
    assert got[("llava_o1_gpu_count", ())] == 2
    gpu0 = (("gpu", "0"), ("uuid", "GPU-0"))
    assert got[("llava_o1_gpu_utilization_ratio", gpu0)] == 0.5
    assert got[("llava_o1_gpu_memory_total_bytes", gpu0)] == 80 << 30
    assert got[("llava_o1_gpu_power_watts", gpu0)] == 350.0
    assert got[("llava_o1_gpu_temperature_celsius", (("gpu", "1"), ("uuid", "GPU-1")))] == 61
    assert ("llava_o1_gpu_power_watts", (("gpu", "1"), ("uuid", "GPU-1"))) not in got
    assert {name for name, _ in got} == set(GPU_METRIC_NAMES)
    samples(collector)
    assert FakeNvml.inits == 1, "NVML is initialised once"
