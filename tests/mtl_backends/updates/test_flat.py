"""The flat (sharpness-aware) update of Phan et al. around a balancer, inside the trainer."""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch
from torch import nn

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_weighting
from mtl_backends.balancers import GRADIENT_BALANCERS
from mtl_backends.benchmarks import Synthetic
from mtl_backends.registry import ConfigError
from mtl_backends.updates import FlatUpdate, Parameters, StepInputs
from mtl_backends.updates.flat import frozen_batchnorm, perturbation


def _trainer(
    bench: Synthetic, cfg: TrainConfig, balancer: str, rho: float | None, seed: int = 1
) -> MTLTrainer:
    cfg = dataclasses.replace(cfg, flat_rho=rho)
    return MTLTrainer(bench, make_weighting("si"), make_balancer(balancer), cfg, seed=seed)


@pytest.mark.parametrize("name", sorted(GRADIENT_BALANCERS))
def test_rho_zero_equals_the_wrapped_balancer(
    name: str, tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    plain = _trainer(tiny_benchmark, tiny_config, name, None)
    flat = _trainer(tiny_benchmark, tiny_config, name, 0.0)
    w = torch.tensor([0.5, 1.0, 2.0])
    for _ in range(5):
        plain.step(w)
        flat.step(w)
    for a, b in zip(plain.model.parameters(), flat.model.parameters(), strict=True):
        if GRADIENT_BALANCERS[name].needs_jacobian:
            assert torch.equal(a, b)
        else:  # `sum` backpropagates once; the flat wrapper always forms the Jacobian.
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_positive_rho_changes_the_update(
    tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    a = _trainer(tiny_benchmark, tiny_config, "cagrad", 0.0)
    b = _trainer(tiny_benchmark, tiny_config, "cagrad", 2.0)
    for _ in range(3):
        a.step()
        b.step()
    params = list(zip(a.model.parameters(), b.model.parameters(), strict=True))
    assert all(bool(torch.isfinite(q).all()) for _, q in params)
    assert any(not torch.equal(p, q) for p, q in params)


def test_sum_gives_weighted_sum_of_perturbed_gradients(tiny_benchmark: Synthetic) -> None:
    """With ``sum``, ``d = w·J + w·(J^SAM - J) = w·J^SAM``: compare with a hand-made SAM pass."""
    torch.manual_seed(0)
    model = tiny_benchmark.build_model().double()
    data = tiny_benchmark.split("train")
    x, y = data.inputs[:32].double(), data.targets[:32].double()
    shared, heads = model.shared_parameters(), [list(h.parameters()) for h in model.heads]
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    rho = 0.05

    def loss_fn(out: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return torch.log(tiny_benchmark.losses(out, target))

    # Reference: perturb by hand, one task at a time.
    expected_d = torch.zeros(sum(p.numel() for p in shared), dtype=torch.float64)
    expected_heads: list[torch.Tensor] = []
    for i in range(3):
        losses = loss_fn(model(x), y)
        g_sh = torch.autograd.grad(losses[i], shared, retain_graph=True)
        g_h = torch.autograd.grad(losses[i], heads[i])
        eps = perturbation(shared, list(g_sh), rho) + perturbation(heads[i], list(g_h), rho)
        block = [*shared, *heads[i]]
        with torch.no_grad():
            for p, e in zip(block, eps, strict=True):
                p.add_(e)
        grads = torch.autograd.grad(loss_fn(model(x), y)[i], block)
        with torch.no_grad():
            for p, e in zip(block, eps, strict=True):
                p.sub_(e)
        expected_d += w[i] * torch.cat([g.flatten() for g in grads[: len(shared)]])
        expected_heads.extend(w[i] * g for g in grads[len(shared) :])

    before = [p.detach().clone() for p in model.parameters()]
    balancer = make_balancer("sum")
    balancer.reset(3)
    params = Parameters(model, shared, model.task_parameters(), [])
    flat = FlatUpdate(params, balancer, loss_fn, rho=rho, n_tasks=3)
    transformed = loss_fn(model(x), y)
    flat.backward(StepInputs(transformed, w, transformed.detach().exp(), None, x, y))
    got_d = torch.cat([p.grad.flatten() for p in shared])  # type: ignore[union-attr]
    torch.testing.assert_close(got_d, expected_d)
    for p, g in zip([p for h in heads for p in h], expected_heads, strict=True):
        torch.testing.assert_close(p.grad, g)
    # Parameters are restored exactly before the optimizer step.
    for p, b in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, b)


def test_batchnorm_statistics_are_frozen() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    bn = model[1]
    assert isinstance(bn, nn.BatchNorm1d)
    before = {k: v.clone() for k, v in bn.named_buffers()}
    with frozen_batchnorm(model):
        model(torch.randn(8, 4))
        assert bn.running_mean is not None
        assert not torch.equal(bn.running_mean, before["running_mean"])
    for k, v in bn.named_buffers():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize("name", ["db_mtl", "pcgrad"])
def test_exact_resume_with_flat(
    name: str, tiny_benchmark: Synthetic, tiny_config: TrainConfig
) -> None:
    full = _trainer(tiny_benchmark, tiny_config, name, 2.0)
    full.fit(steps=8, record=False)
    first = _trainer(tiny_benchmark, tiny_config, name, 2.0)
    first.fit(steps=4, record=False)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = _trainer(tiny_benchmark, tiny_config, name, 2.0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    resumed.fit(steps=4, record=False)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_flat_instance_is_separate(tiny_benchmark: Synthetic, tiny_config: TrainConfig) -> None:
    trainer = _trainer(tiny_benchmark, tiny_config, "db_mtl", 2.0)
    trainer.fit(steps=3, record=False)
    assert isinstance(trainer.update, FlatUpdate)
    flat_balancer = trainer.update.flat_balancer
    assert flat_balancer is not trainer.balancer
    loss_ema = trainer.balancer.state_dict()["ema"]
    flat_ema = flat_balancer.state_dict()["ema"]
    assert not torch.equal(loss_ema, flat_ema)


def test_negative_rho_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="flat_rho"):
        TrainConfig(flat_rho=-1.0)
