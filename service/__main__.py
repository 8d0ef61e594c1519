"""python -m service: serve the checkpoint root over HTTP (configuration: FACEGEN_* variables)."""

import argparse
import logging
import threading
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


class DrainingServer(uvicorn.Server):
    """On SIGTERM /readyz turns 503 at once; the server answers on for `drain_s`, then uvicorn stops accepting, lets
    in-flight requests finish for shutdown_grace_s and exits. A second signal cuts the drain short."""

    def __init__(self, config: uvicorn.Config, state, drain_s: float):
        super().__init__(config)
        self.state, self.drain_s, self.drain = state, drain_s, None

    def handle_exit(self, sig, frame) -> None:
        if self.drain is not None:  # a second signal: no more draining (and the timer must not signal again)
            self.drain.cancel()
        if self.state.draining or not self.drain_s:
            self.state.draining = True
            return super().handle_exit(sig, frame)
        self.state.draining = True
        logging.getLogger(__name__).info("draining: /readyz is 503; closing the listener in %.1f s", self.drain_s)
        self.drain = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        self.drain.daemon = True
        self.drain.start()


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
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            access_log=settings.access_log, timeout_graceful_shutdown=settings.shutdown_grace_s)
    DrainingServer(config, app.state, settings.drain_s).run()


if __name__ == "__main__":
    main()
