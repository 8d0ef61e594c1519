"""A rolling restart of two replicas behind nginx, under wrk load: requests, failures and p99 during the roll.

    python bench/rolling_restart.py [--checkpoint-root checkpoints] [--model vae] [--concurrency 8]

Starts two `python -m service` replicas on one checkpoint root, and nginx (Debian's package) in front of them
with the proxy settings of deploy/nginx/facegen.conf. While wrk (Debian's package) sends GET /sample with a
fresh seed per request, each replica in turn gets SIGTERM, exits, is started again and becomes ready. A failure
is any answer other than 200, or a connection wrk saw fail. tests/service/test_replicas.py runs the same roll.
"""

import argparse
import contextlib
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from service.local_server import LocalServer, free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]

WRK_SCRIPT = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "%s" .. "&seed=" .. (%d + counter))
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%f\\n", summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(99)))
end
"""


def nginx_config(listen: int, replica_ports: list[int], workdir: Path) -> Path:
    """deploy/nginx/facegen.conf with its replicas as a static upstream on loopback ports, runnable unprivileged."""
    site = (ROOT / "deploy" / "nginx" / "facegen.conf").read_text()
    site = "\n".join(line for line in site.splitlines() if not line.strip().startswith(("resolver", "set $replicas")))
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};").replace("http://$replicas", "http://replicas")
    temp = "".join(f"  {kind}_temp_path {workdir};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # max_fails=0: like the config's per-request DNS lookup, a replica that refused once is tried again next time;
    # with nginx's default (down for 10 s after one failure), both replicas are "down" early in the roll: 502s.
    servers = "".join(f"    server 127.0.0.1:{port} max_fails=0;\n" for port in replica_ports)
    main = workdir / "nginx.conf"
    main.write_text(f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\nevents {{}}\nhttp {{\n"
                    f"  access_log off;\n{temp}"
                    f"  upstream replicas {{\n{servers}  }}\n{site}\n}}\n")
    return main


@contextlib.contextmanager
def replicas_behind_nginx(checkpoint_root: Path, env: dict[str, str] | None = None, count: int = 2):
    """`count` replicas serving `checkpoint_root`, and nginx in front of them: yields (nginx url, replicas)."""
    replicas = [LocalServer(checkpoint_root, env or {}) for _ in range(count)]
    with tempfile.TemporaryDirectory() as workdir:
        listen = free_port()
        conf = nginx_config(listen, [r.port for r in replicas], Path(workdir))
        nginx = subprocess.Popen(["nginx", "-c", str(conf), "-p", workdir, "-g", "daemon off;"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for replica in replicas:
                replica.start()
            url = f"http://127.0.0.1:{listen}"

            def answers() -> bool:
                try:
                    return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
                except httpx.TransportError:
                    return False

            if not wait_until(answers, 10):
                raise RuntimeError(f"nginx does not answer:\n{(Path(workdir) / 'error.log').read_text()}")
            yield url, replicas
        finally:
            for replica in replicas:
                if replica.proc is not None:
                    replica.stop()  # never raises: a stuck replica is killed
            nginx.terminate()
            try:
                nginx.wait(timeout=30)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait()


def roll(replicas: list[LocalServer], pause_s: float) -> None:
    """Each replica in turn: SIGTERM, wait for it to exit, start it again, wait until it is ready."""
    for replica in replicas:
        time.sleep(pause_s)
        replica.stop()
        replica.start()
    time.sleep(pause_s)


def rolling_restart(url: str, replicas: list[LocalServer], path: str, concurrency: int = 8, pause_s: float = 2.0) -> dict:
    """wrk on `url` + `path` for as long as a roll of `replicas` takes: its requests, failures and p99."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % (path, random.getrandbits(36)))
    wrk = subprocess.Popen(["wrk", "-t", "1", "-c", str(concurrency), "-d", "600s", "--timeout", "60s", "-s", f.name,
                            url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        started = time.monotonic()
        roll(replicas, pause_s)
        took = time.monotonic() - started
        wrk.send_signal(signal.SIGINT)  # wrk stops and reports what it measured so far
        out = wrk.communicate(timeout=60)[0]
    finally:
        if wrk.poll() is None:
            wrk.kill()
        os.unlink(f.name)
    line = next((line for line in out.splitlines() if line.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    requests, non200, errors, p99_us = line.split()[1:]
    return {"requests": int(requests), "failures": int(non200) + int(errors), "non_2xx": int(non200),
            "socket_errors": int(errors), "p99_ms": float(p99_us) / 1e3, "roll_s": took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint-root", type=Path, default=ROOT / "checkpoints")
    parser.add_argument("--model", default="vae")
    parser.add_argument("--n", type=int, default=4, help="faces per request")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pause", type=float, default=3.0, help="seconds of load before, between and after restarts")
    args = parser.parse_args()
    path = f"/sample?model={args.model}&n={args.n}"
    env = {"FACEGEN_SHUTDOWN_GRACE_S": "10", "FACEGEN_DRAIN_S": "1"}
    with replicas_behind_nginx(args.checkpoint_root, env) as (url, replicas):
        result = rolling_restart(url, replicas, path, args.concurrency, args.pause)
    print(f"rolling restart of {len(replicas)} replicas behind nginx, wrk -c {args.concurrency} GET {path}&seed=…")
    print(f"  {result['requests']} requests in {result['roll_s']:.1f} s, {result['failures']} failed "
          f"({result['non_2xx']} not 2xx, {result['socket_errors']} socket errors), p99 {result['p99_ms']:.0f} ms")


if __name__ == "__main__":
    main()
