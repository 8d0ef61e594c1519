"""python -m service: serve the checkpoint root over HTTP (configuration: FACEGEN_* variables)."""

import argparse
import logging
from typing import Literal, get_args, get_origin

import uvicorn
from pydantic import ValidationError

from models_core.device import resolve_device
from service.app import create_app
from service.settings import Settings


# Settings every deployment sets; the rest are environment variables only (README lists them all).
CLI_SETTINGS = ("checkpoint_root", "host", "port", "device", "precision", "compile")


def add_setting(parser: argparse.ArgumentParser, name: str) -> None:
    """An option for a Settings field, with the field's own description and default."""
    field = Settings.model_fields[name]
    flag = "--" + name.replace("_", "-")
    if field.annotation is bool:
        parser.add_argument(flag, action="store_true", default=None, help=field.description)
        return
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else None
    parser.add_argument(flag, choices=choices, help=f"{field.description} (default: {field.default})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve facegen models over HTTP. Every option can also be set as an environment "
                    "variable FACEGEN_<NAME> (e.g. FACEGEN_CHECKPOINT_ROOT); options win.")
    for name in CLI_SETTINGS:
        add_setting(parser, name)
    args = parser.parse_args(argv)
    try:
        settings = Settings(**{k: v for k, v in vars(args).items() if v is not None})
    except ValidationError as e:
        parser.error("; ".join(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}" for err in e.errors()))
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
