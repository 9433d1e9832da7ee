"""Configuration errors: every problem names the file, the line, the key path and the fix.

``ConfigInvalid`` carries all problems found in one pass, so an operator fixes a file once,
not once per error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ConfigError:
    """One problem. ``line`` is 1-based, None when the problem has no place in the file."""

    file: str
    line: int | None
    key_path: str
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        text = f"{where}: {self.key_path}: {self.message}" if self.key_path else (
            f"{where}: {self.message}")
        return f"{text} (fix: {self.fix})" if self.fix else text

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "key_path": self.key_path,
                "message": self.message, "fix": self.fix}


class ConfigInvalid(Exception):
    """The configuration has at least one problem; ``errors`` holds them all, in file order."""

    def __init__(self, errors: Iterable[ConfigError]) -> None:
        self.errors: list[ConfigError] = list(errors)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)
