"""Collects vLLM's per-step scheduler statistics into an `EngineStats` snapshot."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.v1.metrics.loggers import StatLoggerBase
    from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from models.engine import EngineStats


class VllmStatsCollector:
    """Receives vLLM's scheduler statistics through a custom stat logger; read with `snapshot()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._waiting = 0
        self._kv_usage = 0.0
        self._queries = 0
        self._hits = 0

    def factory(self, vllm_config: VllmConfig, engine_index: int = 0) -> StatLoggerBase:
        """A `StatLoggerFactory` for `AsyncLLM(stat_loggers=[...])`."""
        from vllm.v1.metrics.loggers import StatLoggerBase

        collector = self

        class _Logger(StatLoggerBase):
            def __init__(self, vllm_config: VllmConfig, engine_index: int = 0):
                pass

            def record(
                self,
                scheduler_stats: SchedulerStats | None,
                iteration_stats: IterationStats | None,
                mm_cache_stats: Any = None,
                engine_idx: int = 0,
            ) -> None:
                if scheduler_stats is not None:
                    collector._record(scheduler_stats)

            def log_engine_initialized(self) -> None:
                pass

        return _Logger(vllm_config, engine_index)

    def _record(self, scheduler_stats: SchedulerStats) -> None:
        prefix = scheduler_stats.prefix_cache_stats
        with self._lock:
            self._running = scheduler_stats.num_running_reqs
            self._waiting = scheduler_stats.num_waiting_reqs
            self._kv_usage = float(scheduler_stats.kv_cache_usage)
            if prefix is not None and not prefix.reset:
                self._queries += prefix.queries
                self._hits += prefix.hits

    def snapshot(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                running_requests=self._running,
                waiting_requests=self._waiting,
                kv_cache_usage=self._kv_usage,
                prefix_cache_queries=self._queries,
                prefix_cache_hits=self._hits,
            )
