"""``train.device``: ``auto`` resolution, the CPU-build error, and runs on the chosen device."""

from __future__ import annotations

import pytest
import torch

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_benchmark, make_weighting
from mtl_backends.config import check_device, resolve_device
from mtl_backends.registry import ConfigError
from tests._tiny import TINY_SYNTHETIC

CUDA = torch.cuda.is_available()


def _cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_is_cuda_when_available_else_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _cpu_build(monkeypatch)
    assert resolve_device("auto") == torch.device("cpu")
    assert TrainConfig(device="auto").device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_on_a_cpu_build_names_the_setting_and_the_choices(
    monkeypatch: pytest.MonkeyPatch, device: str
) -> None:
    _cpu_build(monkeypatch)
    with pytest.raises(ConfigError) as err:
        TrainConfig(device=device)
    message = str(err.value)
    assert f"train.device {device!r} is not available" in message
    assert "sees 0 CUDA device(s)" in message
    assert "valid choices: cpu, cuda, cuda:N, mps, auto" in message
    assert "use train.device: cpu (or auto)" in message


def test_a_non_device_names_the_setting_it_came_from() -> None:
    with pytest.raises(ConfigError, match=r"^env\.train\.device 'gpu' is not a torch device .*"):
        check_device("gpu", "env.train.device")
    with pytest.raises(ConfigError, match=r"valid choices: cpu, cuda, cuda:N, mps, auto"):
        TrainConfig(device="tpu:0")


@pytest.mark.skipif(CUDA, reason="auto is CUDA on this machine")
def test_auto_on_a_cpu_machine_is_the_cpu_run_bit_for_bit() -> None:
    bench = make_benchmark("synthetic", **TINY_SYNTHETIC)
    runs = []
    for device in ("cpu", "auto"):
        cfg = TrainConfig(steps=8, batch_size=20, base_window=(0, 3), device=device)
        trainer = MTLTrainer(bench, make_weighting("famo"), make_balancer("db_mtl"), cfg, seed=1)
        assert trainer.device == torch.device("cpu")
        losses = [trainer.step().losses for _ in range(8)]
        runs.append((losses, [p.detach().clone() for p in trainer.model.parameters()]))
    for a, b in zip(runs[0][0] + runs[0][1], runs[1][0] + runs[1][1], strict=True):
        assert torch.equal(a, b)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize(("weighting", "balancer"), [("uw", "sum"), ("famo", "db_mtl")])
def test_a_cuda_run_keeps_model_batches_and_state_on_the_device(
    weighting: str, balancer: str
) -> None:
    bench = make_benchmark("synthetic", **TINY_SYNTHETIC)
    cfg = TrainConfig(steps=6, batch_size=20, base_window=(0, 2), device="cuda")
    trainer = MTLTrainer(bench, make_weighting(weighting), make_balancer(balancer), cfg, seed=0)
    for _ in range(6):
        result = trainer.step()
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    assert trainer._batch[0].device.type == "cuda"
    assert torch.isfinite(result.losses).all()
    assert trainer.evaluate("val").metrics
