"""Resume state (networks, optimizers, EMA, RNG, counters) as one safetensors file, no pickle.

Nested state (an optimizer's state_dict, say) is split into its tensors, stored as safetensors
entries, and a JSON skeleton in the file's metadata that says where each tensor goes. Dict keys
keep their type (optimizer state is keyed by int), tuples stay tuples.
"""

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from models_core.checkpoint import atomic_save_tensors

STATE_FILE = "training_state.safetensors"


def flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor in `obj` into `tensors` under a path-like key; return the JSON skeleton."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        items = [flatten(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix} in the training state")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
    if isinstance(skeleton, list):
        return [unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, "state", tensors)
    atomic_save_tensors(tensors, path, metadata={"skeleton": json.dumps(skeleton)})


def load_training_state(path: Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    with safe_open(str(path), framework="pt", device="cpu") as f:
        skeleton = json.loads(f.metadata()["skeleton"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return unflatten(skeleton, tensors)
