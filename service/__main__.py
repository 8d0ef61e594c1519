"""python -m service: serve the checkpoint root over HTTP (configuration: FACEGEN_* variables)."""

import argparse
import logging

import uvicorn

from models_core.device import resolve_device
from models_core.precision import PRECISIONS
from service.app import create_app
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve facegen models over HTTP. Every option can also be set as an environment "
                    "variable FACEGEN_<NAME> (e.g. FACEGEN_CHECKPOINT_ROOT); options win.")
    parser.add_argument("--checkpoint-root", help="checkpoint store to serve (default: checkpoints)")
    parser.add_argument("--host", help="interface to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: 8000)")
    parser.add_argument("--device", help="cpu (default), cuda, cuda:N, or auto (CUDA where there is one)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="auto (default): bf16 where the chip has native bf16 (CUDA GPUs that support it, "
                             "CPUs with AVX512-BF16 or AMX), fp32 elsewhere; the choice and why are logged at start-up")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile each decoder as it loads: slower start, faster forward passes")
    args = parser.parse_args(argv)
    settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    try:
        resolve_device(settings.device)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # On SIGTERM uvicorn stops accepting, lets in-flight requests finish for shutdown_grace_s, then exits.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info",
                access_log=settings.access_log, timeout_graceful_shutdown=settings.shutdown_grace_s)


if __name__ == "__main__":
    main()
