"""GPU figures for Prometheus, read through NVML (nvidia-ml-py) at scrape time.

On a machine without an NVIDIA driver (or without nvidia-ml-py) only `llava_o1_gpu_count` is
exported, as 0: no error, and one debug line at start-up rather than a log line per scrape.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("llava_o1.gpu")

PREFIX = "llava_o1_gpu"
PER_DEVICE = {
    "utilization_ratio": "GPU busy time over the last sample period (0..1)",
    "memory_used_bytes": "GPU memory in use",
    "memory_total_bytes": "GPU memory installed",
    "power_watts": "GPU power draw",
    "temperature_celsius": "GPU core temperature",
}
# How each PER_DEVICE figure is read, from the NVML module and a device handle.
READERS = {
    "utilization_ratio": lambda nvml, handle: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
    "memory_used_bytes": lambda nvml, handle: float(nvml.nvmlDeviceGetMemoryInfo(handle).used),
    "memory_total_bytes": lambda nvml, handle: float(nvml.nvmlDeviceGetMemoryInfo(handle).total),
    "power_watts": lambda nvml, handle: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
    "temperature_celsius": lambda nvml, handle: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
}
GPU_METRIC_NAMES = (f"{PREFIX}_count", *(f"{PREFIX}_{name}" for name in PER_DEVICE))


class GpuCollector:
    """A prometheus_client collector; NVML is initialised once, lazily, and never retried."""

    def __init__(self, nvml=None):
        self._nvml = nvml
        self._ready: bool | None = None
        self._lock = threading.Lock()

    def _init(self) -> bool:
        with self._lock:
            if self._ready is None:
                try:
                    if self._nvml is None:
                        import pynvml

                        self._nvml = pynvml
                    self._nvml.nvmlInit()
                    self._ready = True
                except Exception as exc:  # no driver, no library, no device: GPU series are absent
                    log.debug("NVML unavailable, no GPU metrics: %s", exc)
                    self._ready = False
            return self._ready

    def read(self) -> list[dict]:
        """One dict per visible GPU: index, uuid and the PER_DEVICE figures that could be read."""
        if not self._init():
            return []
        nvml = self._nvml
        devices = []
        try:
            count = nvml.nvmlDeviceGetCount()
        except Exception as exc:
            log.debug("NVML device count failed: %s", exc)
            return []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
            except Exception:
                continue
            device = {"index": str(index), "uuid": uuid.decode() if isinstance(uuid, bytes) else str(uuid)}
            for name, read in READERS.items():
                try:
                    device[name] = read(nvml, handle)
                except Exception:  # a figure this device does not report (e.g. power on some boards)
                    pass
            devices.append(device)
        return devices

    def collect(self):
        devices = self.read()
        count = GaugeMetricFamily(f"{PREFIX}_count", "GPUs visible to the server")
        count.add_metric([], len(devices))
        yield count
        for name, help_text in PER_DEVICE.items():
            family = GaugeMetricFamily(f"{PREFIX}_{name}", help_text, labels=["gpu", "uuid"])
            for device in devices:
                if name in device:
                    family.add_metric([device["index"], device["uuid"]], device[name])
            if devices:
                yield family
