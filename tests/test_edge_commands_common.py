"""Loading the config for a command: the serving commands log the config's warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.commands.common import load_or_report

GOOD = Path(__file__).parent / "config" / "good-minimal.yaml"


def test_serving_commands_log_config_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgesteer.config"):
        config = load_or_report(str(GOOD), "serve")
    assert config is not None and config.warnings, "the fixture should carry a warning"
    logged = [r.getMessage() for r in caplog.records if r.name == "edgesteer.config"]
    assert logged == [f"edgesteer serve: {w}" for w in config.warnings]


def test_other_commands_leave_warnings_to_check(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgesteer.config"):
        config = load_or_report(str(GOOD), "plan")
    assert config is not None and config.warnings
    assert not [r for r in caplog.records if r.name == "edgesteer.config"]
