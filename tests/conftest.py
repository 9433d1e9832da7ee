"""Shared fixtures: free loopback ports, and the CI rule for real servers.

Under CI=true a test whose real server or tool is missing FAILS; elsewhere it skips with
the command that would install it.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host`` right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port: int = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as s2:
            try:
                s2.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port found")


IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def require(ok: bool, why: str) -> None:
    """The one place a test may be skipped: when ``ok`` is false the test FAILS under CI
    (the CI machine has every server, root, ::1 and Linux) and skips elsewhere, saying
    ``why``."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{why} (required under CI=true)")
    pytest.skip(why)


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; under CI a missing binary fails the test instead of skipping it."""
    path = shutil.which(name)
    require(path is not None,
            f"{name} not found: apt-get install {package} (make test does it as root)")
    assert path is not None
    return path


@pytest.fixture
def unused_port() -> int:
    return free_port()
