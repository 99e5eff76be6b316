"""``train.mixed_precision: bf16``: the training forward in bfloat16 autocast, the rest float32."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_benchmark, make_weighting
from mtl_backends.config import key_dict
from mtl_backends.registry import ConfigError
from mtl_backends.stacked import StackedTrainer
from tests._tiny import TINY_SYNTHETIC

CONFIG = TrainConfig(steps=30, batch_size=20, base_window=(4, 8), mixed_precision="bf16")


def _trainer(config: TrainConfig = CONFIG, balancer: str = "sum", seed: int = 0) -> MTLTrainer:
    bench = make_benchmark("synthetic", **TINY_SYNTHETIC)
    return MTLTrainer(bench, make_weighting("igbv1"), make_balancer(balancer), config, seed=seed)


@pytest.mark.parametrize("balancer", ["sum", "mgda", "db_mtl"])
def test_bf16_trains_close_to_float32_and_keeps_float32_state(balancer: str) -> None:
    mixed = _trainer(balancer=balancer)
    full = _trainer(dataclasses.replace(CONFIG, mixed_precision="none"), balancer)
    h_mixed, h_full = mixed.fit(), full.fit()
    # Autocast is really on: the first batch's losses differ in their low bits ...
    assert h_mixed.losses[0] != h_full.losses[0]
    # ... and the run stays close to the float32 one (bfloat16 has ~3 significant digits).
    for a, b in zip(h_mixed.losses[-1], h_full.losses[-1], strict=True):
        assert a == pytest.approx(b, rel=0.05)
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    # The losses the weighting and the update see, and the evaluation, are float32.
    raw = mixed.forward()
    assert raw.dtype == torch.float32
    mixed.apply()
    result = mixed.evaluate("test")
    assert all(isinstance(v, float) for v in result.metrics.values())


def test_the_forward_runs_in_bfloat16_and_nothing_else_does() -> None:
    trainer = _trainer()
    seen: list[torch.dtype] = []
    first = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear))
    first.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer.forward()
    assert seen == [torch.bfloat16]
    trainer.apply()
    trainer.evaluate("val")
    assert seen[1:] and set(seen[1:]) == {torch.float32}


def test_bf16_resumes_exactly() -> None:
    full = _trainer()
    full.fit(steps=20)
    first = _trainer()
    first.fit(steps=10)
    resumed = _trainer()
    resumed.load_state_dict(first.state_dict())
    resumed.fit(steps=10)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_the_default_keeps_every_result_key_and_bf16_changes_it() -> None:
    plain = TrainConfig(steps=30, batch_size=20)
    assert "mixed_precision" not in key_dict(plain)
    assert key_dict(dataclasses.replace(plain, mixed_precision="bf16"))["mixed_precision"] == "bf16"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"mixed_precision": "fp16"},
            "unknown train.mixed_precision 'fp16'; valid choices: none, bf16",
        ),
        ({"mixed_precision": "bf16", "flat_rho": 2.0}, "does not combine with train.flat_rho"),
    ],
)
def test_bad_settings_are_named(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(steps=30, batch_size=20, **changes)


def test_the_stacked_trainer_refuses_it() -> None:
    bench = make_benchmark("synthetic", **TINY_SYNTHETIC)
    with pytest.raises(ValueError, match="does not support mixed_precision"):
        StackedTrainer([bench], [0], CONFIG)
