"""The seam between probe agents and the engine: a measurement bus."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from probes.measurement import Measurement


class MeasurementBus(Protocol):
    """Carries Measurements from agents to engines.

    ``subscribe`` sees what is published after it is called.
    """

    async def publish(self, measurement: Measurement) -> None: ...

    def subscribe(self) -> AsyncIterator[Measurement]: ...

    async def aclose(self) -> None: ...
