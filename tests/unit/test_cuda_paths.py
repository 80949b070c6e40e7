"""The engine's CUDA choices, checked on the CPU (issue #39, item 3): what runs on a GPU is decided by these
functions, so a wrong branch shows here before any GPU is lent."""

from __future__ import annotations

import pytest
import torch

from tasks import engine

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(("choice", "bf16_capable", "dtype", "scaled"), [
    ("auto", True, torch.bfloat16, False),   # Ampere and later
    ("auto", False, torch.float16, True),    # V100, T4: fp16 needs loss scaling
    ("bf16", False, torch.bfloat16, False),  # asked for explicitly: honoured
    ("fp16", True, torch.float16, True),
    ("fp32", True, None, False),
])
def test_precision_choice_on_a_gpu(monkeypatch, choice, bf16_capable, dtype, scaled):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_capable)
    precision = engine.choose_precision(choice, CUDA)
    assert (precision.dtype, precision.scaled) == (dtype, scaled)


def test_tf32_is_set_through_one_api_only():
    """torch >= 2.9 raises when the legacy `allow_tf32` flags and the new `fp32_precision` ones are mixed, and
    libraries read the legacy ones (transformers, accelerate): the engine sets only those, and reading the
    precision back (as torch.compile does) still works."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        engine.configure_device(CUDA)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "high"
        engine.configure_device(torch.device("cpu"))  # no-op off CUDA
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_each_process_trains_on_its_local_gpu(monkeypatch):
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    device = engine.pick_device(engine.Processes(rank=3, world=4, local_rank=1, local_world=2))
    assert device == torch.device("cuda", 1) and chosen == [1]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert engine.pick_device(engine.Processes()) == torch.device("cpu")


def test_prediction_autocasts_to_bf16_on_a_gpu_only(monkeypatch):
    asked = []
    monkeypatch.setattr(torch, "autocast", lambda **kwargs: asked.append(kwargs))  # a CPU build disables CUDA's
    engine.autocast(CUDA)
    engine.autocast(torch.device("cpu"))
    assert asked == [{"device_type": "cuda", "dtype": torch.bfloat16, "enabled": True},
                     {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": False}]


def test_host_batches_are_pinned_for_asynchronous_copies_on_a_gpu(monkeypatch):
    """On CUDA a batch is pinned and copied non-blocking (the copy overlaps the previous step's compute)."""
    calls = []

    class Recorder(torch.Tensor):
        def pin_memory(self, *args, **kwargs):
            calls.append("pin")
            return self

        def to(self, *args, **kwargs):
            calls.append(("to", kwargs.get("non_blocking")))
            return self

    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long).as_subclass(Recorder)}
    engine.to_device(batch, CUDA)
    assert calls == ["pin", ("to", True)]
