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


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; under CI a missing binary fails the test instead of skipping it."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} not found: apt-get install {package} (make test does it as root)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def unused_port() -> int:
    return free_port()
