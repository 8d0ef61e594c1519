import pytest
import torch

from models_core.device import resolve_device


def test_auto_is_cuda_only_where_there_is_one():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_and_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="no usable CUDA device"):
        resolve_device("cuda:0")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        resolve_device("gpu")
