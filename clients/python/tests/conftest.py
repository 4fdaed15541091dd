"""Fixtures that start the real `pm-scheduler` binary on loopback ports with temporary data directories.

The binary is `$PM_SCHEDULER_BIN` (set by the workspace's `cargo test`, tests/python_client.rs), else the
workspace's `target/debug/pm-scheduler`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def scheduler_bin() -> str:
    path = os.environ.get("PM_SCHEDULER_BIN") or str(ROOT / "target" / "debug" / "pm-scheduler")
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{path} is missing: build it (cargo build -p pm-scheduler) or set PM_SCHEDULER_BIN")
    return path


def free_addr(ip: str = "127.0.0.1") -> str:
    """`ip:port` with a port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((ip, 0))
        return f"{ip}:{s.getsockname()[1]}"


class Scheduler:
    """A running `pm-scheduler`; `kill`, `restart` keep its address and data."""

    def __init__(self, data: Path, args: List[str], addr: str = "127.0.0.1:0") -> None:
        self.data = data
        self.args = args
        self.addr = addr
        self.log = data.parent / f"{data.name}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.start()

    def start(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            with open(self.log, "ab") as log:
                cmd = [scheduler_bin(), "--listen", self.addr, "--data", str(self.data), "--http-listen", "off"]
                proc = subprocess.Popen(cmd + self.args, stdout=subprocess.PIPE, stderr=log,
                                        env={**os.environ, "RUST_LOG": "warn"})  # fmt: skip
            assert proc.stdout is not None
            line = proc.stdout.readline().decode()
            if line.startswith("listening on "):
                self.addr = line[len("listening on ") :].strip()
                self.proc = proc
                return
            proc.wait()
            if time.monotonic() > deadline:  # the port may still be held by the process just killed
                raise RuntimeError(f"pm-scheduler did not start ({proc.returncode}): {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, args: Optional[List[str]] = None) -> None:
        self.kill()
        if args is not None:
            self.args = args
        self.start()


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def start(tmp_path: Path) -> Iterator:
    """`start(*flags, addr=...)` starts a scheduler; every one is killed after the test."""
    started: List[Scheduler] = []

    def make(*args: str, addr: str = "127.0.0.1:0", name: Optional[str] = None) -> Scheduler:
        s = Scheduler(tmp_path / (name or f"node-{len(started)}"), list(args), addr)
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def scheduler(start) -> Scheduler:
    """One scheduler with the default flags."""
    return start()


@pytest.fixture
def certs(tmp_path: Path) -> dict:
    """A throwaway CA and a server certificate for 127.0.0.1 (made with the openssl command)."""
    if shutil.which("openssl") is None:
        raise RuntimeError("the TLS tests need the openssl command (Debian package openssl)")
    d = tmp_path / "tls"
    d.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "ca.key",
        "-out", "ca.pem", "-days", "2", "-subj", "/CN=pm test CA")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=127.0.0.1")  # fmt: skip
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")  # fmt: skip
    return {"ca": str(d / "ca.pem"), "cert": str(d / "server.pem"), "key": str(d / "server.key")}


def wait_until(pred, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


def kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


__all__ = ["Scheduler", "free_addr", "wait_until", "kill_tree", "tempfile"]
