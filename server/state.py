"""What the routes share: the engine and the settings, held on the app and reached by dependency."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from models.engine import Engine
from server.admission import AdmissionController
from server.lifecycle import Lifecycle
from server.metrics import ServerMetrics
from server.settings import ServerSettings


@dataclass
class ServerState:
    engine: Engine
    settings: ServerSettings
    metrics: ServerMetrics
    admission: AdmissionController
    started: float
    lifecycle: Lifecycle

    @property
    def model_names(self) -> list[str]:
        return [self.engine.model_name]


def get_state(request: Request) -> ServerState:
    return request.app.state.llava_o1
