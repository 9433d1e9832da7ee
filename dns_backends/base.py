"""The seam between the engine and whatever serves DNS: the Backend protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from edge.plan import Plan


class BackendError(Exception):
    """A backend could not apply a plan. The message names the backend and the cause."""

    def __init__(self, backend: str, message: str) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend


@dataclass(frozen=True, slots=True)
class ApplyResult:
    backend: str
    plan_version: int
    changed: int
    dry_run: bool = False
    notes: tuple[str, ...] = field(default=())


class Backend(Protocol):
    name: str

    async def apply(self, plan: Plan, *, dry_run: bool = False) -> ApplyResult: ...

    async def aclose(self) -> None: ...
