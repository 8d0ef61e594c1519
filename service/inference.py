"""Running a served network: no autograd, the served precision, optionally through torch.compile."""

import logging
import types
from typing import Callable

import torch

log = logging.getLogger("facegen.service")


def run_inference(fn, x: torch.Tensor, device: torch.device, autocast) -> torch.Tensor:
    """fn(x) on the device, without autograd, under the served precision; float32 on the CPU back."""
    with torch.inference_mode(), autocast():
        return fn(x.to(device)).float().cpu()


def compile_decoder(model: torch.nn.Module, device: torch.device, autocast, label: str) -> Callable:
    """model.decode through torch.compile, compiled here and now for batch size 1 and for the
    dynamic-batch graph every larger batch shares, so no request waits for the compiler.

    Falls back to the eager decode, with a log line, where compiling fails (on a CPU inductor
    needs a C++ compiler). Served weights never change, so they are frozen into the graph:
    BatchNorm folds into the convolutions and the kernels get prepacked weights.
    """
    def decode(z):
        return model.decode(z)

    # Dynamo keeps its graphs on the code object, and frozen weights make a graph per model. Were
    # every version of a model to share Generator.decode's code object, hot-swapped versions would
    # pile up there until dynamo's recompile limit silently left the new ones eager. torch offers no
    # public way to give a function its own graph cache, so each model gets its own code object.
    decode = types.FunctionType(decode.__code__.replace(), decode.__globals__, closure=decode.__closure__)
    compiled = torch.compile(decode, dynamic=True, options={"freezing": True})
    try:
        for n in (1, 2):
            run_inference(compiled, torch.zeros(n, model.latent_dim), device, autocast)
    except Exception as e:  # whatever the compiler stack raises, eager still serves
        log.warning("torch.compile failed for %s, serving it eager: %s", label, str(e).splitlines()[0] if str(e) else e)
        return model.decode
    log.info("compiled %s", label)
    return compiled
