"""Service latency and throughput under load, against a naive baseline served by the same process.

    python bench/service_load.py --checkpoint-root checkpoints --model gan [--requests 64]

Starts the real server (uvicorn, a subprocess on a free port) with three extra baseline routes
written the naive way — fp32, one forward per request in FastAPI's thread pool, no batching, no
response cache, Pillow's default PNG level, and for /baseline/pca-grid the PCA basis recomputed
per request (GANSpace for the GAN, 5000 held-out latents for AE/VAE) — and drives both with a
bounded httpx.AsyncClient. Seeds vary per request so neither side is served from a cache.
"""

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def build_app(checkpoint_root: str):
    import torch
    from fastapi import Query, Request, Response
    from PIL import Image

    from models_core.images import image_grid
    from models_core.latent import PcaBasis, sample_prior
    from service.app import create_app
    from service.settings import Settings

    app = create_app(Settings(checkpoint_root=checkpoint_root))

    def png(images) -> Response:
        buffer = io.BytesIO()
        Image.fromarray(image_grid(images, nrow=int(len(images) ** 0.5 + 0.999))).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @app.get("/baseline/sample")
    def baseline_sample(request: Request, model: str = "gan", n: int = Query(64, le=256), seed: int = 0):
        net = request.app.state.registry.latest[model].net
        with torch.no_grad():
            return png(net.decode(sample_prior(n, net.latent_dim, torch.Generator().manual_seed(seed))))

    @app.get("/baseline/pca-grid")
    def baseline_pca_grid(request: Request, model: str = "gan", steps: int = 10, seed: int = 0):
        served = request.app.state.registry.latest[model]
        net = served.net
        with torch.no_grad():
            if served.manifest.kind == "gan":
                from trainer.bases import ganspace_basis  # the bench may use the trainer; the service never does

                basis = ganspace_basis(net, torch.device("cpu"), n_samples=5000)
            else:
                faces = request.app.state.faces.repeat(79, 1, 1, 1)[:5000]
                basis = PcaBasis.fit(torch.cat([net.embed(faces[i : i + 500]) for i in range(0, 5000, 500)]))
            z0 = sample_prior(1, net.latent_dim, torch.Generator().manual_seed(seed))
            grid = basis.grid(0, 1, 3.0, steps).reshape(steps * steps, -1) - basis.mean + z0
            return png(net.decode(grid))

    return app


async def load(url: str, paths: list[str], concurrency: int) -> tuple[list[float], float]:
    semaphore = asyncio.Semaphore(concurrency)
    latencies = []
    async with httpx.AsyncClient(timeout=600) as client:

        async def one(path):
            async with semaphore:
                t0 = time.perf_counter()
                r = await client.get(url + path)
                r.raise_for_status()
                latencies.append(time.perf_counter() - t0)

        await client.get(url + paths[0])  # warm-up
        start = time.perf_counter()
        await asyncio.gather(*(one(p) for p in paths))
        return latencies, time.perf_counter() - start


def report(name: str, latencies: list[float], wall: float) -> float:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    rps = len(latencies) / wall
    print(f"  {name:28s} p50 {q[49] * 1000:8.1f} ms   p99 {q[98] * 1000:8.1f} ms   {rps:7.2f} req/s")
    return rps


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint-root", default="checkpoints")
    p.add_argument("--model", default="gan")
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # internal: run the server on this port
    args = p.parse_args()
    if args.serve:
        import uvicorn

        uvicorn.run(build_app(args.checkpoint_root), host="127.0.0.1", port=args.serve, log_level="warning")
        return

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--checkpoint-root", args.checkpoint_root], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        m, n = args.model, args.requests
        print(f"model {m}, {n} requests per scenario, seeds vary per request (no cache hits)")
        scenarios = [
            ("/sample n=64, concurrency 4", 4, [f"/sample?model={m}&n=64&seed={i}" for i in range(n)],
             [f"/baseline/sample?model={m}&n=64&seed={i}" for i in range(n)]),
            ("/sample n=1, concurrency 16", 16, [f"/sample?model={m}&n=1&seed={i}" for i in range(4 * n)],
             [f"/baseline/sample?model={m}&n=1&seed={i}" for i in range(4 * n)]),
            ("/pca-grid 10×10, concurrency 1", 1, [f"/pca-grid?model={m}&seed={i}" for i in range(max(4, n // 8))],
             [f"/baseline/pca-grid?model={m}&seed={i}" for i in range(4)]),
        ]
        for title, concurrency, ours, baseline in scenarios:
            print(title)
            ours_lat, ours_wall = asyncio.run(load(url, ours, concurrency))
            base_lat, base_wall = asyncio.run(load(url, baseline, concurrency))
            r_ours = report("ours", ours_lat, ours_wall)
            r_base = report("baseline", base_lat, base_wall)
            print(f"  throughput ×{r_ours / r_base:.2f}, p50 latency ×{statistics.median(base_lat) / statistics.median(ours_lat):.1f} lower")
        cached, wall = asyncio.run(load(url, [f"/pca-grid?model={m}&seed=0"] * 32, 1))
        report("/pca-grid repeated (cache)", cached, wall)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
