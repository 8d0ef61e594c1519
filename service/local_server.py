"""`python -m service` as a child process on this machine, for the tools that need a real server:
benchmarks, the page's screenshots and the tests."""

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds pass; return whether it became true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


@dataclass
class LocalServer:
    """`python -m service` serving `checkpoint_root` on a loopback port; `env` adds to this process's
    environment. Stopped with SIGTERM, it can be started again on the same port (a restart)."""

    checkpoint_root: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def start(self, timeout: float = 60) -> "LocalServer":
        """Start it and wait until /readyz answers 200; RuntimeError with its output if it does not."""
        env = {**os.environ, "PYTHONPATH": str(REPO), "FACEGEN_CHECKPOINT_ROOT": str(self.checkpoint_root), **self.env}
        self.proc = subprocess.Popen([sys.executable, "-m", "service", "--port", str(self.port)], env=env, cwd=REPO,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not wait_until(self.ready, timeout, interval=0.1):
            raise RuntimeError(f"the service on port {self.port} did not become ready:\n{self.stop()}")
        return self

    def stop(self, timeout: float = 60) -> str:
        """SIGTERM, then its output once it has exited (killed if still running after `timeout` s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:  # stuck (in start-up, say): it must not outlive its caller
            self.proc.kill()
            return self.proc.communicate()[0] + f"\n(killed: no exit {timeout:.0f} s after SIGTERM)"
