"""Real Redis servers for tests: a single server, a 3-master Cluster and a Sentinel set.

Each runs as a child process on free loopback ports with persistence off, in a temporary
directory, and is killed when the test ends. ``RedisServer`` can be stopped, killed and
started again on the same port (the "Redis restarted" fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port, require_binary


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: object, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free cluster port pair")


@dataclass
class RedisServer:
    """One redis-server process (or sentinel, with ``sentinel=True``)."""

    binary: str
    port: int
    workdir: Path
    args: Sequence[str] = ()
    sentinel: bool = False
    config_text: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.workdir / f"redis-{self.port}.log"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary]
        if self.sentinel:
            conf = self.workdir / f"sentinel-{self.port}.conf"
            conf.write_text(self.config_text)  # sentinel rewrites its config: a file
            cmd += [str(conf), "--sentinel"]
        cmd += ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--logfile", str(self.log), "--daemonize", "no"]
        if not self.sentinel:
            cmd += ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        cmd += list(self.args)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait(lambda: _port_open(self.port) or self.proc.poll() is not None,  # type: ignore[union-attr]
                  f"redis on port {self.port}")
        except RuntimeError:
            self.stop()
            raise
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"redis-server exited: {err}{log[-2000:]}")
        return self

    def kill(self) -> None:
        """SIGKILL: the server dies with whatever it held (no persistence)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def cli(self, *args: str, user: Sequence[str] = ()) -> str:
        cli = require_binary("redis-cli", "redis-tools")
        out = subprocess.run([cli, "-p", str(self.port), *user, *args], check=True,
                             capture_output=True, timeout=10)
        return out.stdout.decode()


def redis_binary() -> str:
    return require_binary("redis-server", "redis-server")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), free_port(), tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class RedisClusterSet:
    servers: list[RedisServer]

    @property
    def nodes(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", s.port) for s in self.servers)


def start_cluster(workdir: Path, masters: int = 3) -> RedisClusterSet:
    """``masters`` cluster-enabled servers joined with redis-cli --cluster create."""
    binary = redis_binary()
    cli = require_binary("redis-cli", "redis-tools")
    servers: list[RedisServer] = []
    try:
        for i in range(masters):
            port = free_cluster_port()
            servers.append(RedisServer(binary, port, workdir / f"node{i}", args=[
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(workdir / f"node{i}" / "nodes.conf"),
                "--cluster-node-timeout", "2000"]).start())
        subprocess.run([cli, "--cluster", "create", *(f"127.0.0.1:{s.port}" for s in servers),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, capture_output=True, timeout=30)
        _wait(lambda: all("cluster_state:ok" in s.cli("cluster", "info") for s in servers),
              "cluster_state:ok", timeout=20)
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return RedisClusterSet(servers)


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterSet]:
    cluster = start_cluster(tmp_path / "cluster")
    try:
        yield cluster
    finally:
        for s in cluster.servers:
            s.stop()


@dataclass
class SentinelSet:
    master: RedisServer
    replica: RedisServer
    sentinels: list[RedisServer]
    name: str = "edgemaster"

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(("127.0.0.1", s.port) for s in self.sentinels)

    def stop(self) -> None:
        for s in [*self.sentinels, self.replica, self.master]:
            s.stop()


def start_sentinels(workdir: Path, count: int = 3) -> SentinelSet:
    """A master, one replica and ``count`` sentinels (quorum 2) that fail over fast."""
    binary = redis_binary()
    name = "edgemaster"
    master = RedisServer(binary, free_port(), workdir / "master").start()
    started = [master]
    try:
        replica = RedisServer(binary, free_port(), workdir / "replica",
                              args=["--replicaof", "127.0.0.1", str(master.port)]).start()
        started.append(replica)
        _wait(lambda: "master_link_status:up" in replica.cli("info", "replication"),
              "replica in sync")
        sentinels = []
        for i in range(count):
            text = (f"sentinel monitor {name} 127.0.0.1 {master.port} 2\n"
                    f"sentinel down-after-milliseconds {name} 600\n"
                    f"sentinel failover-timeout {name} 3000\n"
                    f"sentinel parallel-syncs {name} 1\n")
            s = RedisServer(binary, free_port(), workdir / f"sentinel{i}", sentinel=True,
                            config_text=text).start()
            started.append(s)
            sentinels.append(s)
        _wait(lambda: all("sentinels=3" in s.cli("info", "sentinel") for s in sentinels),
              "sentinels to see each other", timeout=20)
    except BaseException:
        for s in started:
            s.stop()
        raise
    return SentinelSet(master, replica, sentinels, name)


@pytest.fixture
def redis_sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    sset = start_sentinels(tmp_path / "sentinel")
    try:
        yield sset
    finally:
        sset.stop()


def make_tls_files(workdir: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    openssl = require_binary("openssl", "openssl")
    workdir.mkdir(parents=True, exist_ok=True)
    files = {k: workdir / f"{k}.pem" for k in ("ca", "ca_key", "cert", "key")}
    csr, ext = workdir / "server.csr", workdir / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=30)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
        "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(files["key"]), "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey",
        str(files["ca_key"]), "-CAcreateserial", "-days", "1", "-extfile", str(ext),
        "-out", str(files["cert"]))
    return files


@contextlib.contextmanager
def tls_redis(workdir: Path, files: dict[str, Path]) -> Iterator[RedisServer]:
    """A server that only speaks TLS (port 0 for plain text), no client certificates."""
    port = free_port()
    server = RedisServer(redis_binary(), free_port(), workdir, args=[
        "--tls-port", str(port), "--tls-cert-file", str(files["cert"]),
        "--tls-key-file", str(files["key"]), "--tls-ca-cert-file", str(files["ca"]),
        "--tls-auth-clients", "no"])
    server.start()
    server.port, plain = port, server.port  # clients use the TLS port
    try:
        yield server
    finally:
        server.port = plain
        server.stop()


class CuttableLink:
    """An asyncio TCP forwarder 127.0.0.1:port -> Redis that a test can cut and restore: a
    cut closes every connection and refuses new ones (one agent loses its network)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> CuttableLink:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        w.close()

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.cut:
            w.close()
            return
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            w.close()
            return
        self._writers |= {w, uw}
        try:
            await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))
        finally:
            self._writers -= {w, uw}

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if cut:
            for w in list(self._writers):
                w.close()

    async def aclose(self) -> None:
        self.set_cut(True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
