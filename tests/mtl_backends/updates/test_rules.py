"""Update rules: which one a run gets, what each writes into ``.grad``, the flat rule's state."""

from __future__ import annotations

import copy
import dataclasses
import io

import pytest
import torch
from torch import Tensor, nn

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_weighting
from mtl_backends.balancers import GradientBalancer
from mtl_backends.benchmarks import Synthetic
from mtl_backends.updates import (
    FlatUpdate,
    JacobianUpdate,
    LossFn,
    Parameters,
    StepInputs,
    SumUpdate,
    UpdateRule,
    jacobian,
    make_update_rule,
    write_grad,
)


@pytest.mark.parametrize(
    ("balancer", "weighting", "rho", "rule"),
    [
        ("sum", "ew", None, SumUpdate),
        ("sum", "si", 0.5, FlatUpdate),
        ("db_mtl", "si", None, JacobianUpdate),
        ("pcgrad", "ew", None, JacobianUpdate),
        ("mgda", "ew", 2.0, FlatUpdate),
    ],
)
def test_trainer_gets_the_rule_of_its_balancer_and_flat_rho(
    tiny_benchmark: Synthetic,
    tiny_config: TrainConfig,
    balancer: str,
    weighting: str,
    rho: float | None,
    rule: type[UpdateRule],
) -> None:
    cfg = dataclasses.replace(tiny_config, flat_rho=rho)
    trainer = MTLTrainer(
        tiny_benchmark, make_weighting(weighting), make_balancer(balancer), cfg, seed=0
    )
    assert type(trainer.update) is rule
    assert trainer.update.balancer is trainer.balancer
    if isinstance(trainer.update, FlatUpdate):
        assert trainer.update.rho == rho
        assert trainer.update.flat_balancer is not trainer.balancer
        assert type(trainer.update.flat_balancer) is type(trainer.balancer)


def _setup(bench: Synthetic, seed: int = 0) -> tuple[Parameters, Tensor, Tensor]:
    torch.manual_seed(seed)
    model = bench.build_model().double()
    data = bench.split("train")
    params = Parameters(model, model.shared_parameters(), model.task_parameters(), [])
    return params, data.inputs[:32].double(), data.targets[:32].double()


def _log_losses(bench: Synthetic) -> LossFn:
    def loss_fn(outputs: list[Tensor], targets: Tensor) -> Tensor:
        return torch.log(bench.losses(outputs, targets))

    return loss_fn


def _inputs(params: Parameters, bench: Synthetic, x: Tensor, y: Tensor, w: Tensor) -> StepInputs:
    transformed = _log_losses(bench)(params.model(x), y)
    return StepInputs(transformed, w, transformed.detach().exp(), None, x, y)


@pytest.mark.parametrize("method", ["batched", "sequential"])
def test_make_update_rule_direct(tiny_benchmark: Synthetic, method: str) -> None:
    params, _, _ = _setup(tiny_benchmark)
    loss_fn = _log_losses(tiny_benchmark)
    cfg = TrainConfig(jacobian=method)
    sum_rule = make_update_rule(params, make_balancer("sum"), cfg, loss_fn, 3, 0)
    assert isinstance(sum_rule, SumUpdate) and sum_rule.name == "sum"
    jac_rule = make_update_rule(params, make_balancer("cagrad"), cfg, loss_fn, 3, 0)
    assert isinstance(jac_rule, JacobianUpdate) and jac_rule.method == method
    flat_cfg = dataclasses.replace(cfg, flat_rho=1.5)
    flat_rule = make_update_rule(params, make_balancer("sum"), flat_cfg, loss_fn, 3, 0)
    assert isinstance(flat_rule, FlatUpdate) and flat_rule.method == method
    assert repr(flat_rule) == "FlatUpdate(Sum(weights='after'), rho=1.5, adaptive=True)"
    assert repr(sum_rule) == "SumUpdate(Sum(weights='after'))"


def test_sum_and_jacobian_with_sum_give_the_same_gradients(tiny_benchmark: Synthetic) -> None:
    params, x, y = _setup(tiny_benchmark)
    extra_param = nn.Parameter(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    params = dataclasses.replace(params, extra=[extra_param])
    w = torch.tensor([0.5, 1.25, 2.0], dtype=torch.float64)
    grads = []
    for rule_cls in (SumUpdate, JacobianUpdate):
        for p in params.model.parameters():
            p.grad = None
        extra_param.grad = None
        balancer = make_balancer("sum")
        balancer.reset(3)
        step = _inputs(params, tiny_benchmark, x, y, w)
        step = dataclasses.replace(step, extra=(extra_param**2).sum())
        rule_cls(params, balancer).backward(step)
        grads.append([p.grad.clone() for p in [*params.model.parameters(), extra_param]])  # type: ignore[union-attr]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads[0][-1], 2 * extra_param.detach())


class _Scaled(GradientBalancer):
    """Task ``t`` contributes ``c_t g_t``; heads are scaled by ``h_t`` (a test balancer)."""

    def __init__(self, c: list[float], h: list[float]) -> None:
        super().__init__()
        self.c = torch.tensor(c, dtype=torch.float64)
        self.h = torch.tensor(h, dtype=torch.float64)

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        return self.c[:, None].to(jacobian) * jacobian

    def head_scales(self) -> Tensor | None:
        return self.h


def test_jacobian_update_writes_the_balancer_direction(tiny_benchmark: Synthetic) -> None:
    params, x, y = _setup(tiny_benchmark)
    w = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    c, h = [1.0, -2.0, 0.25], [3.0, 0.5, 1.0]
    # By hand: per-task gradients of the shared trunk and of each head.
    losses = _log_losses(tiny_benchmark)(params.model(x), y)
    shared_rows: list[Tensor] = []
    head_grads: list[Tensor] = []
    for t in range(3):
        trunk = torch.autograd.grad(losses[t], params.shared, retain_graph=True)
        shared_rows.append(torch.cat([v.flatten() for v in trunk]))
        head = list(params.model.heads[t].parameters())
        head_grads.extend(
            w[t] * h[t] * v for v in torch.autograd.grad(losses[t], head, retain_graph=True)
        )
    expected = sum(w[t] * c[t] * shared_rows[t] for t in range(3))
    assert isinstance(expected, Tensor)
    balancer = _Scaled(c, h)
    balancer.reset(3)
    JacobianUpdate(params, balancer).backward(_inputs(params, tiny_benchmark, x, y, w))
    got = torch.cat([p.grad.flatten() for p in params.shared])  # type: ignore[union-attr]
    torch.testing.assert_close(got, expected)
    for p, expected_grad in zip(params.task, head_grads, strict=True):
        torch.testing.assert_close(p.grad, expected_grad)


def test_write_grad_replaces_and_checks_the_size() -> None:
    a = nn.Parameter(torch.zeros(2, 2))
    b = nn.Parameter(torch.zeros(3))
    a.grad = torch.ones(2, 2)
    write_grad([a, b], torch.arange(7.0))
    assert a.grad is not None and b.grad is not None
    assert a.grad.tolist() == [[0.0, 1.0], [2.0, 3.0]] and b.grad.tolist() == [4.0, 5.0, 6.0]
    with pytest.raises(ValueError, match="direction has 8 entries, parameters have 7"):
        write_grad([a, b], torch.arange(8.0))


def test_jacobian_unknown_method_lists_the_choices() -> None:
    p = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="unknown jacobian method 'fast'; valid choices: batched"):
        jacobian((p * 2).sum().reshape(1), [p], method="fast")


def _flat(
    params: Parameters, bench: Synthetic, balancer: GradientBalancer, seed: int = 0
) -> FlatUpdate:
    balancer.reset(3, torch.Generator().manual_seed(1))
    return FlatUpdate(params, balancer, _log_losses(bench), rho=0.5, n_tasks=3, seed=seed)


def _grads(rule: UpdateRule, params: Parameters, bench: Synthetic, x: Tensor, y: Tensor) -> list:
    for p in params.model.parameters():
        p.grad = None
    rule.backward(_inputs(params, bench, x, y, torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)))
    return [p.grad.clone() for p in params.model.parameters()]  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["db_mtl", "pcgrad"])
def test_flat_state_dict_round_trip(tiny_benchmark: Synthetic, name: str) -> None:
    params, x, y = _setup(tiny_benchmark)
    first = _flat(params, tiny_benchmark, make_balancer(name))
    for i in range(3):
        _grads(first, params, tiny_benchmark, x[i:], y[i:])
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert set(state) == {"balancer", "generator"}
    resumed = FlatUpdate(
        params, copy.deepcopy(first.balancer), _log_losses(tiny_benchmark), 0.5, 3, seed=0
    )
    fresh = FlatUpdate(
        params, copy.deepcopy(first.balancer), _log_losses(tiny_benchmark), 0.5, 3, seed=0
    )
    resumed.load_state_dict(state)
    expected = _grads(first, params, tiny_benchmark, x, y)
    got = _grads(resumed, params, tiny_benchmark, x, y)
    for a, b in zip(expected, got, strict=True):
        assert torch.equal(a, b)
    after, resumed_after = first.state_dict(), resumed.state_dict()
    if name == "db_mtl":
        assert after["balancer"]["step"] == resumed_after["balancer"]["step"] == 4
        assert torch.equal(after["balancer"]["ema"], resumed_after["balancer"]["ema"])
        # Without the state the flat instance's EMA starts over and the update differs.
        other = _grads(fresh, params, tiny_benchmark, x, y)
        assert any(not torch.equal(a, b) for a, b in zip(expected, other, strict=True))
    else:
        assert torch.equal(after["generator"], resumed_after["generator"])
        assert not torch.equal(after["generator"], fresh.state_dict()["generator"])


def test_flat_generator_is_seeded_from_the_run_seed(tiny_benchmark: Synthetic) -> None:
    params, _, _ = _setup(tiny_benchmark)
    a = _flat(params, tiny_benchmark, make_balancer("pcgrad"), seed=0).state_dict()["generator"]
    b = _flat(params, tiny_benchmark, make_balancer("pcgrad"), seed=0).state_dict()["generator"]
    c = _flat(params, tiny_benchmark, make_balancer("pcgrad"), seed=1).state_dict()["generator"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    # Every flat instance of a run draws from the same seeded stream, whatever the balancer.
    d = _flat(params, tiny_benchmark, make_balancer("sum"), seed=0).state_dict()["generator"]
    assert torch.equal(a, d)


@pytest.mark.parametrize("rho", [-0.1, float("inf"), float("nan")])
def test_flat_refuses_a_bad_radius(tiny_benchmark: Synthetic, rho: float) -> None:
    params, _, _ = _setup(tiny_benchmark)
    with pytest.raises(ValueError, match="flat rho must be finite and >= 0"):
        FlatUpdate(params, make_balancer("sum"), _log_losses(tiny_benchmark), rho=rho, n_tasks=3)
