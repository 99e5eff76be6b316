"""Tests of ``StackedTrainer``: equivalence with ``MTLTrainer``, slot isolation, resume, refusals.

Run ``pytest -s`` to see the maximum deviations from ``MTLTrainer`` actually measured.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_benchmark, make_weighting
from mtl_backends.balancers.base import GradientBalancer
from mtl_backends.benchmarks import Benchmark
from mtl_backends.models.hps import HardParameterSharing
from mtl_backends.stacked import AdamImpl, StackedTrainer
from mtl_backends.trainer import DivergenceError

SMALL: dict[str, Any] = {
    "n_train": 300,
    "n_val": 50,
    "n_test": 50,
    "input_dim": 20,
    "output_dim": 5,
    "hidden": [16, 16],
}
SEEDS = [3, 11, 25, 40]
CONFIG = TrainConfig(steps=30, batch_size=30, base_window=(5, 10))
WEIGHTING = {"log": "si", "identity": "ew"}
RTOL = 1e-5


def small(seed: int, **overrides: Any) -> Benchmark:
    return make_benchmark("synthetic", seed=seed, **{**SMALL, **overrides})


def reference(transform: str, seed: int, config: TrainConfig, **overrides: Any) -> MTLTrainer:
    return MTLTrainer(
        small(seed, **overrides),
        make_weighting(WEIGHTING[transform]),
        make_balancer("sum"),
        config,
        seed=seed,
    )


def random_weights(steps: int, n: int, seed: int = 0) -> Tensor:
    return 2.0 * torch.rand(steps, n, 3, generator=torch.Generator().manual_seed(seed))


def loss_deviation(got: Tensor, want: Tensor) -> float:
    return float(((got - want).abs() / want.abs()).max())


def param_deviation(trainer: StackedTrainer, i: int, model: nn.Module) -> float:
    """Max over tensors of max |Δ| / max |p|."""
    state = trainer.model_state_dict(i)
    return max(
        float((state[name] - p.detach()).abs().max() / p.detach().abs().max())
        for name, p in model.named_parameters()
    )


def compare(
    transform: str,
    configs: list[TrainConfig],
    adam: AdamImpl,
    steps: int = 30,
    **overrides: Any,
) -> tuple[float, float]:
    """Run StackedTrainer and per-slot MTLTrainers side by side; return max loss/param deviation."""
    stacked = StackedTrainer(
        [small(s, **overrides) for s in SEEDS], SEEDS, configs, transform, adam=adam
    )
    refs = [reference(transform, s, c, **overrides) for s, c in zip(SEEDS, configs, strict=True)]
    loss_dev = 0.0
    for w in random_weights(steps, len(SEEDS)):
        result = stacked.step(w)
        for i, ref in enumerate(refs):
            ref_result = ref.step(w[i])
            assert result.lr[i] == pytest.approx(ref_result.lr, rel=1e-15)
            loss_dev = max(loss_dev, loss_deviation(result.losses[i], ref_result.losses))
    param_dev = max(param_deviation(stacked, i, ref.model) for i, ref in enumerate(refs))
    val = stacked.validation_losses()
    for i, ref in enumerate(refs):
        want = torch.tensor(ref.evaluate("val").losses)
        assert loss_deviation(val[i], want) <= RTOL
    return loss_dev, param_dev


@pytest.mark.parametrize("adam", ["fused", "foreach"])
@pytest.mark.parametrize("transform", ["log", "identity"])
def test_equal_to_mtltrainer(transform: str, adam: AdamImpl) -> None:
    loss_dev, param_dev = compare(transform, [CONFIG] * len(SEEDS), adam)
    print(
        f"\n[{transform}/{adam}] max rel loss dev {loss_dev:.3g}, max rel param dev {param_dev:.3g}"
    )
    assert loss_dev <= RTOL
    assert param_dev <= RTOL


@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_equal_with_different_lr_schedules(adam: AdamImpl) -> None:
    configs = [
        TrainConfig(steps=budget, batch_size=30, lr=3e-3, lr_schedule="cosine", weight_decay=wd)
        for budget, wd in ((12, 0.0), (30, 0.0), (45, 1e-3), (90, 1e-3))
    ]
    loss_dev, param_dev = compare("log", configs, adam, steps=40)
    print(f"\n[cosine/{adam}] max rel loss dev {loss_dev:.3g}, max rel param dev {param_dev:.3g}")
    assert loss_dev <= RTOL
    assert param_dev <= RTOL


def test_first_step_losses_match() -> None:
    stacked = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log")
    losses = stacked.forward()
    for i, s in enumerate(SEEDS):
        ref = reference("log", s, CONFIG)
        torch.testing.assert_close(losses[i], ref.forward(), rtol=1e-6, atol=0.0)


def snapshot(trainer: StackedTrainer) -> dict[str, Tensor]:
    params: dict[str, Tensor] = trainer.state_dict()["params"]
    return params


@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_reset_slot_leaves_other_slots_bit_identical(adam: AdamImpl) -> None:
    a = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", adam=adam)
    b = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", adam=adam)
    weights = random_weights(25, len(SEEDS))
    for w in weights[:10]:
        a.step(w)
        b.step(w)
    new_config = TrainConfig(steps=20, batch_size=30, lr_schedule="cosine")
    a.reset_slot(2, small(99), 99, new_config)
    assert a.step_counts.tolist() == [10, 10, 0, 10]
    ref = reference("log", 99, new_config)
    for w in weights[10:]:
        ra, rb = a.step(w), b.step(w)
        ref_result = ref.step(w[2])
        for i in (0, 1, 3):
            assert torch.equal(ra.losses[i], rb.losses[i])
        assert loss_deviation(ra.losses[2], ref_result.losses) <= RTOL
    pa, pb = snapshot(a), snapshot(b)
    for name in pa:
        for i in (0, 1, 3):
            assert torch.equal(pa[name][i], pb[name][i])
    assert param_deviation(a, 2, ref.model) <= RTOL
    assert a.step_counts.tolist() == [25, 25, 15, 25]


@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_diverging_slot_ends_alone(adam: AdamImpl) -> None:
    lrs = [1e-3, 1e30, 1e-3, 1e-3]  # slot 1 explodes
    configs = [TrainConfig(steps=30, batch_size=30, lr=lr) for lr in lrs]
    sane = [TrainConfig(steps=30, batch_size=30)] * len(SEEDS)
    a = StackedTrainer([small(s) for s in SEEDS], SEEDS, configs, "identity", adam=adam)
    b = StackedTrainer([small(s) for s in SEEDS], SEEDS, sane, "identity", adam=adam)
    frozen: dict[str, Tensor] | None = None
    for w in random_weights(20, len(SEEDS)):
        ra, rb = a.step(w), b.step(w)
        for i in (0, 2, 3):
            assert torch.equal(ra.losses[i], rb.losses[i])
        if bool(ra.diverged[1]):
            assert not bool(ra.updated[1])
            if frozen is None:
                frozen = a.model_state_dict(1)
            else:  # frozen: no further updates
                now = a.model_state_dict(1)
                for name, value in frozen.items():
                    torch.testing.assert_close(now[name], value, rtol=0, atol=0, equal_nan=True)
    assert a.diverged.tolist() == [False, True, False, False]
    assert not bool(b.diverged.any())
    assert frozen is not None
    # a diverged slot's weights are ignored, even if not finite; it steps no further
    steps = a.step_counts[1].item()
    w = torch.ones(len(SEEDS), 3)
    w[1] = float("nan")
    a.step(w)
    assert a.step_counts[1].item() == steps
    # reset brings it back
    a.reset_slot(1, small(SEEDS[1]), SEEDS[1], sane[1])
    assert not bool(a.diverged.any())
    assert bool(torch.isfinite(a.step(torch.ones(len(SEEDS), 3)).losses).all())


@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_injected_nan_is_isolated(adam: AdamImpl) -> None:
    a = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", adam=adam)
    b = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", adam=adam)
    weights = random_weights(10, len(SEEDS))
    for w in weights[:3]:
        a.step(w)
        b.step(w)
    state = a.state_dict()
    state["params"]["encoder.0.weight"][0, 0, 0] = float("nan")
    a.load_state_dict(state)
    for w in weights[3:]:
        ra, rb = a.step(w), b.step(w)
        for i in (1, 2, 3):
            assert torch.equal(ra.losses[i], rb.losses[i])
    assert a.diverged.tolist() == [True, False, False, False]
    pa, pb = snapshot(a), snapshot(b)
    for name in pa:
        assert torch.equal(pa[name][1:], pb[name][1:])


def test_nonfinite_weights_of_live_slot_are_refused() -> None:
    a = StackedTrainer([small(s) for s in SEEDS[:2]], SEEDS[:2], CONFIG, "log")
    a.forward()
    with pytest.raises(ValueError, match="finite"):
        a.apply(torch.tensor([[1.0, float("inf"), 1.0], [1.0, 1.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        a.apply(torch.ones(3))


def test_two_phase_protocol() -> None:
    a = StackedTrainer([small(s) for s in SEEDS[:2]], SEEDS[:2], CONFIG, "log")
    with pytest.raises(RuntimeError):
        a.apply(torch.ones(2, 3))
    losses = a.forward()
    assert losses.shape == (2, 3)
    with pytest.raises(RuntimeError):
        a.forward()
    with pytest.raises(RuntimeError):
        a.reset_slot(0, small(5), 5)
    result = a.apply(torch.ones(2, 3))
    assert torch.equal(result.losses, losses)
    assert result.step.tolist() == [0, 0]


def test_a_state_saved_between_forward_and_apply_resumes_the_pending_step() -> None:
    """The pending batch is part of the state: its losses are recomputed, bit for bit."""
    w = random_weights(12, 2)
    full = StackedTrainer([small(s) for s in SEEDS[:2]], SEEDS[:2], CONFIG, "log")
    for step in range(12):
        full.step(w[step])
    part = StackedTrainer([small(s) for s in SEEDS[:2]], SEEDS[:2], CONFIG, "log")
    for step in range(9):  # step 9 starts the second epoch (300 rows / 30): a new batch order
        part.step(w[step])
    pending = part.forward()
    state = part.state_dict()
    resumed = StackedTrainer([small(s) for s in SEEDS[:2]], SEEDS[:2], CONFIG, "log")
    resumed.load_state_dict(state)
    assert torch.equal(resumed.apply(w[9]).losses, pending)
    for step in range(10, 12):
        resumed.step(w[step])
    for name, p in full._params.items():
        assert torch.equal(p, resumed._params[name]), name


@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_state_dict_round_trip_is_bit_exact(adam: AdamImpl) -> None:
    weights = random_weights(30, len(SEEDS))
    a = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", adam=adam)
    for w in weights[:13]:  # past an epoch boundary (10 steps per epoch)
        a.step(w)
    a.reset_slot(3, small(77, scales=[2.0, 5.0, 50.0]), 77)
    for w in weights[13:17]:
        a.step(w)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    # a fresh trainer built with the original arguments; slot 3 is rebuilt from the state
    b = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", adam=adam)
    b.load_state_dict(state)
    assert b.seeds == a.seeds
    assert b.benchmarks[3].config() == a.benchmarks[3].config()
    for w in weights[17:]:
        ra, rb = a.step(w), b.step(w)
        assert torch.equal(ra.losses, rb.losses)
    pa, pb = snapshot(a), snapshot(b)
    for name in pa:
        assert torch.equal(pa[name], pb[name])


def test_validation_losses_on_first_rows() -> None:
    a = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log")
    for w in random_weights(5, len(SEEDS)):
        a.step(w)
    got = a.validation_losses(17)
    for i, s in enumerate(SEEDS):
        benchmark = small(s)
        model = benchmark.build_model()
        model.load_state_dict(a.model_state_dict(i))
        val = benchmark.split("val")
        with torch.no_grad():
            want = benchmark.losses(model(val.inputs[:17]), val.targets[:17])
        torch.testing.assert_close(got[i], want, rtol=RTOL, atol=0.0)


@pytest.mark.parametrize(
    ("name", "kwargs", "batch_size"),
    [
        ("synthetic", {"kinds": ["classification", "regression", "classification"]}, 30),
        ("multi_digits", {}, 64),  # 4 metrics of 3 tasks: the digit sum has MAE and MSE
        ("toy", {}, 1),
    ],
)
def test_validation_metrics_are_each_slots_benchmark_metrics(
    name: str, kwargs: dict[str, Any], batch_size: int
) -> None:
    """The metric rewards' input: every slot's metrics, as its benchmark computes them."""
    seeds = [0, 1]
    benchmarks = [
        small(s, **kwargs) if name == "synthetic" else make_benchmark(name, **kwargs) for s in seeds
    ]
    config = TrainConfig(steps=10, batch_size=batch_size)
    stacked = StackedTrainer(benchmarks, seeds, config, "identity")
    for _ in range(5):
        stacked.step(torch.ones(len(seeds), benchmarks[0].n_tasks))
    n = min(17, len(benchmarks[0].split("val")))
    losses, metrics = stacked.validation(n)
    assert metrics is not None and metrics.dtype == torch.float64
    torch.testing.assert_close(losses, stacked.validation_losses(n), rtol=0.0, atol=0.0)
    assert stacked.validation(n, metrics=False)[1] is None
    for i, bench in enumerate(benchmarks):
        model = bench.build_model()
        model.load_state_dict(stacked.model_state_dict(i))
        val = bench.split("val")
        with torch.no_grad():
            want = bench.metrics(model(val.inputs[:n]), val.targets[:n])
        assert metrics.shape == (len(seeds), len(bench.metric_specs))
        for j, spec in enumerate(bench.metric_specs):
            # An accuracy may flip by one row where the vmapped forward rounds differently.
            atol = 1.0 / n if spec.higher_is_better else 0.0
            assert float(metrics[i, j]) == pytest.approx(want[spec.name], rel=RTOL, abs=atol)


class Wrapped(Benchmark):
    """A synthetic benchmark whose encoder gets an extra layer."""

    def __init__(self, inner: Benchmark, layer: nn.Module) -> None:
        self.inner = inner
        self.layer = layer
        self.name = inner.name
        self.task_names = inner.task_names
        self.metric_specs = inner.metric_specs
        self.lower_bounds = inner.lower_bounds

    def split(self, name: str) -> Any:
        return self.inner.split(name)

    def build_model(self) -> HardParameterSharing:
        model = self.inner.build_model()
        return HardParameterSharing(nn.Sequential(model.encoder, self.layer), list(model.heads))

    def losses(self, outputs: list[Tensor], targets: Tensor) -> Tensor:
        return self.inner.losses(outputs, targets)

    def metrics(self, outputs: list[Tensor], targets: Tensor) -> dict[str, float]:
        return self.inner.metrics(outputs, targets)


@pytest.mark.parametrize(
    "layer", [nn.BatchNorm1d(16), nn.Dropout(0.1), nn.InstanceNorm1d(16, track_running_stats=True)]
)
def test_refuses_batchnorm_and_dropout(layer: nn.Module) -> None:
    with pytest.raises(ValueError, match="does not support"):
        StackedTrainer([Wrapped(small(s), layer) for s in SEEDS[:2]], SEEDS[:2], CONFIG)


def test_accepts_tanh_layers() -> None:
    benchmarks = [Wrapped(small(s), nn.Tanh()) for s in SEEDS[:2]]
    a = StackedTrainer(benchmarks, SEEDS[:2], CONFIG, "log")
    assert a.step(torch.ones(2, 3)).losses.shape == (2, 3)


def test_refuses_incompatible_slot() -> None:
    a = StackedTrainer([small(s) for s in SEEDS[:2]], SEEDS[:2], CONFIG, "log")
    with pytest.raises(ValueError, match="architecture"):
        a.reset_slot(0, small(5, hidden=[16, 8]), 5)
    with pytest.raises(ValueError, match="batch_size"):
        a.reset_slot(0, small(5), 5, TrainConfig(batch_size=20))
    with pytest.raises(ValueError, match="adam"):
        StackedTrainer([small(1)], [1], TrainConfig(batch_size=30, optimizer="sgd"))


def unvmappable_mse(outputs: list[Tensor], targets: Tensor) -> Tensor:
    """Per-task MSE with data-dependent Python control flow (``bool(tensor)``)."""
    if bool((targets != targets).any()):
        raise AssertionError("no NaN targets here")
    return torch.stack([((out - targets[:, t]) ** 2).mean() for t, out in enumerate(outputs)])


def test_a_losses_function_that_cannot_be_vmapped_is_refused() -> None:
    with pytest.raises(ValueError, match="vmap"):
        StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", losses_fn=unvmappable_mse)


def test_masked_synthetic_stacks_with_its_own_losses() -> None:
    """Label fractions (a mask channel in the targets) stack: the losses use no Python branch."""
    fractions = {"fractions": [0.3, 1.0, 0.6]}
    benchmarks = [small(s, **fractions) for s in SEEDS]
    stacked = StackedTrainer(benchmarks, SEEDS, CONFIG, "log")
    refs = [reference("log", s, CONFIG, **fractions) for s in SEEDS]
    loss_dev = 0.0
    for w in random_weights(20, len(SEEDS)):
        result = stacked.step(w)
        for i, ref in enumerate(refs):
            loss_dev = max(loss_dev, loss_deviation(result.losses[i], ref.step(w[i]).losses))
    print(f"\n[masked synthetic] max rel loss dev {loss_dev:.3g}")
    assert loss_dev <= RTOL


@pytest.mark.parametrize("adam", ["fused", "foreach"])
def test_stacked_adam_is_bitwise_torch_adam(adam: AdamImpl) -> None:
    """Given the same gradients, each slot's update is torch.optim.Adam's, bit for bit.

    ``foreach`` against the default (single-tensor) Adam, ``fused`` against ``Adam(fused=True)``;
    slots at different steps, learning rates and weight decays. Uses private hooks: the public
    API never lets gradients be injected.
    """
    configs = [
        TrainConfig(batch_size=30, lr=lr, weight_decay=wd)
        for lr, wd in ((1e-3, 0.0), (3e-3, 0.0), (1e-2, 1e-2), (1e-3, 1e-2))
    ]
    stacked = StackedTrainer([small(s) for s in SEEDS], SEEDS, configs, "log", adam=adam)
    stacked._steps[:] = [0, 5, 0, 2]  # per-slot step counts (bias corrections)
    models = []
    for i, c in enumerate(configs):
        params = [p.detach()[i].contiguous().requires_grad_() for p in stacked._leaves]
        opt = torch.optim.Adam(
            params, lr=c.lr, weight_decay=c.weight_decay, fused=adam == "fused" or None
        )
        models.append((params, opt, int(stacked._steps[i])))
    gen = torch.Generator().manual_seed(1)
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=gen) * 10.0 for p in stacked._leaves]
        lrs = stacked._lrs()
        stacked._steps += 1
        decays = [c.weight_decay for c in configs]
        stacked.adam.step(grads, list(range(len(SEEDS))), lrs, decays, list(stacked._steps))
        for i, (params, opt, start) in enumerate(models):
            for p, g in zip(params, grads, strict=True):
                p.grad = g[i].clone()
                state = opt.state[p]
                if not state and start:  # emulate a run already `start` steps in, zero moments
                    state["step"] = torch.tensor(float(start))
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
            opt.step()
    for i, (params, _, _) in enumerate(models):
        for p, leaf in zip(params, stacked._leaves, strict=True):
            assert torch.equal(p.detach(), leaf.detach()[i]), (i, tuple(p.shape))


@pytest.mark.parametrize(("name", "batch_size"), [("toy", 1), ("multi_digits", 64)])
def test_other_benchmarks(name: str, batch_size: int) -> None:
    """Toy (placeholder head parameters without gradient) and MultiDigits (cross-entropy)."""
    seeds = [0, 1, 2]
    benchmarks = [make_benchmark(name) for _ in seeds]
    config = TrainConfig(steps=20, batch_size=batch_size)
    stacked = StackedTrainer(benchmarks, seeds, config, "log")
    refs = [
        MTLTrainer(b, make_weighting("si"), make_balancer("sum"), config, seed=s)
        for b, s in zip(benchmarks, seeds, strict=True)
    ]
    n_tasks = benchmarks[0].n_tasks
    loss_dev = 0.0
    for _ in range(20):
        result = stacked.step(torch.ones(len(seeds), n_tasks))
        for i, ref in enumerate(refs):
            want = ref.step(torch.ones(n_tasks)).losses
            loss_dev = max(loss_dev, loss_deviation(result.losses[i], want))
    print(f"\n[{name}] max rel loss dev {loss_dev:.3g}")
    assert loss_dev <= RTOL


def test_log_transform_refuses_loss_below_lower_bound() -> None:
    benchmarks = [Wrapped(small(s), nn.Identity()) for s in SEEDS[:2]]
    benchmarks[1].lower_bounds = torch.full((3,), 1e9)
    a = StackedTrainer(benchmarks, SEEDS[:2], CONFIG, "log")
    with pytest.raises(ValueError, match="below its lower bound"):
        a.forward()
    b = StackedTrainer(benchmarks, SEEDS[:2], CONFIG, "identity")  # no bound needed
    assert b.step(torch.ones(2, 3)).losses.shape == (2, 3)


def test_the_mlp_fast_path_equals_the_torch_func_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """Synthetic's MLP stacks through baddbmm; forcing torch.func gives the same run to rounding.

    The first forward is bit for bit the same; the gradients' kernels sum in other orders.
    """
    import mtl_backends.stacked.trainer as stacked_trainer
    from mtl_backends.stacked.models import mlp_forward

    assert mlp_forward(small(1).build_model()) is not None
    fast = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log")
    monkeypatch.setattr(stacked_trainer, "mlp_forward", lambda model: None)
    slow = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log")
    assert torch.equal(fast.forward(), slow.forward())
    for step, w in enumerate(random_weights(6, len(SEEDS))):
        if step:
            fast.forward()
            slow.forward()
        a, b = fast.apply(w).losses, slow.apply(w).losses
        assert loss_deviation(a, b) <= 1e-6
    torch.testing.assert_close(
        fast.validation_losses(20), slow.validation_losses(20), rtol=1e-6, atol=0
    )
    for name, p in fast._params.items():
        torch.testing.assert_close(p, slow._params[name], rtol=1e-5, atol=1e-7)


def test_synthetic_instances_of_mixed_task_kinds_stack() -> None:
    """Typed synthetic instances (classification and regression tasks in any mix, with or without
    label fractions) share one losses function and stack; an untyped instance does not fit."""
    kinds: list[dict[str, Any]] = [
        {"kinds": ["regression", "classification", "regression"]},
        {"kinds": ["classification", "classification", "regression"], "fractions": [0.5, 1, 1]},
        {"kinds": ["regression"] * 3},
        {"kinds": ["classification"] * 3, "fractions": [1.0, 0.4, 0.7]},
    ]
    benchmarks = [small(s, **k) for s, k in zip(SEEDS, kinds, strict=True)]
    stacked = StackedTrainer(benchmarks, SEEDS, CONFIG, "log")
    refs = [reference("log", s, CONFIG, **k) for s, k in zip(SEEDS, kinds, strict=True)]
    loss_dev = 0.0
    for w in random_weights(12, len(SEEDS)):
        result = stacked.step(w)
        for i, ref in enumerate(refs):
            loss_dev = max(loss_dev, loss_deviation(result.losses[i], ref.step(w[i]).losses))
    print(f"\n[mixed kinds] max rel loss dev {loss_dev:.3g}")
    assert loss_dev <= RTOL
    with pytest.raises(ValueError, match="slots must share split sizes and data shapes"):
        stacked.reset_slot(0, small(5), 5)


def _steps_to_divergence(trainer: MTLTrainer, limit: int) -> int | None:
    for _ in range(limit):
        try:
            trainer.step()
        except DivergenceError:
            return trainer.step_count
    return None


def test_an_exploding_slot_diverges_where_mtltrainer_does() -> None:
    """Finite but exploding losses (Adam at lr 1e3) end a slot as MTLTrainer's check ends a run."""
    exploding = TrainConfig(steps=30, batch_size=30, lr=1e3)
    configs = [CONFIG, exploding, CONFIG, CONFIG]
    stacked = StackedTrainer([small(s) for s in SEEDS], SEEDS, configs, "identity")
    for _ in range(30):
        result = stacked.step(torch.ones(len(SEEDS), 3))
        if bool(result.diverged[1]):
            break
    assert stacked.diverged.tolist() == [False, True, False, False]
    single = reference("identity", SEEDS[1], exploding)
    expected = _steps_to_divergence(single, 30)
    assert expected is not None
    # MTLTrainer raises in the forward of step `expected`; the slot stopped at the same step.
    assert int(stacked.step_counts[1]) == expected
    # Without the check the slot runs on with finite, absurd losses.
    off = TrainConfig(steps=30, batch_size=30, lr=1e3, divergence_factor=None)
    unchecked = StackedTrainer([small(SEEDS[1])], [SEEDS[1]], [off], "identity")
    for _ in range(expected + 1):
        losses = unchecked.step(torch.ones(1, 3)).losses
    assert not bool(unchecked.diverged.any()) and bool(torch.isfinite(losses).all())


def test_explosion_limits_survive_a_state_round_trip() -> None:
    exploding = TrainConfig(steps=30, batch_size=30, lr=1e3)
    a = StackedTrainer([small(SEEDS[1])], [SEEDS[1]], [exploding], "identity")
    a.step(torch.ones(1, 3))
    state = a.state_dict()
    b = StackedTrainer([small(SEEDS[1])], [SEEDS[1]], [exploding], "identity")
    b.load_state_dict(state)
    for _ in range(29):
        ra, rb = a.step(torch.ones(1, 3)), b.step(torch.ones(1, 3))
        assert ra.diverged.tolist() == rb.diverged.tolist()
    assert bool(a.diverged[0])


# -- balancers that need per-task gradients ---------------------------------------------------
BALANCED: list[tuple[str, dict[str, Any]]] = [
    ("db_mtl", {}),
    ("pcgrad", {}),  # random task order: each slot's balancer generator must match MTLTrainer's
    ("mgda", {}),
    ("imgrad", {}),
]


class HeadScaled(GradientBalancer):
    """Sum of the rows, with the heads' gradients scaled per task (the ``head_scales`` hook)."""

    def contributions(self, jacobian: Tensor, losses: Tensor) -> Tensor:
        return jacobian

    def head_scales(self) -> Tensor | None:
        return torch.tensor([2.0, 1.0, 0.25])


def test_head_scales_reach_the_heads_as_in_mtltrainer() -> None:
    stacked = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log", balancer=HeadScaled())
    refs = [MTLTrainer(small(s), make_weighting("si"), HeadScaled(), CONFIG, seed=s) for s in SEEDS]
    plain = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log")
    for w in random_weights(10, len(SEEDS)):
        stacked.step(w)
        plain.step(w)
        for i, ref in enumerate(refs):
            ref.step(w[i])
    assert max(param_deviation(stacked, i, ref.model) for i, ref in enumerate(refs)) <= RTOL
    assert param_deviation(plain, 0, refs[0].model) > 10 * RTOL  # the scales changed the heads


def balanced_pair(
    name: str, kwargs: dict[str, Any], config: TrainConfig = CONFIG
) -> tuple[StackedTrainer, list[MTLTrainer]]:
    stacked = StackedTrainer(
        [small(s) for s in SEEDS], SEEDS, config, "log", balancer=make_balancer(name, **kwargs)
    )
    refs = [
        MTLTrainer(small(s), make_weighting("si"), make_balancer(name, **kwargs), config, seed=s)
        for s in SEEDS
    ]
    return stacked, refs


@pytest.mark.parametrize("jacobian", ["batched", "sequential"])
@pytest.mark.parametrize(("name", "kwargs"), BALANCED, ids=[b[0] for b in BALANCED])
def test_equal_to_mtltrainer_with_a_balancer(
    name: str, kwargs: dict[str, Any], jacobian: str
) -> None:
    config = TrainConfig(steps=30, batch_size=30, base_window=(5, 10), jacobian=jacobian)
    stacked, refs = balanced_pair(name, kwargs, config)
    loss_dev = 0.0
    for w in random_weights(20, len(SEEDS)):
        result = stacked.step(w)
        for i, ref in enumerate(refs):
            loss_dev = max(loss_dev, loss_deviation(result.losses[i], ref.step(w[i]).losses))
    param_dev = max(param_deviation(stacked, i, ref.model) for i, ref in enumerate(refs))
    print(f"\n[{name}/{jacobian}] max rel loss dev {loss_dev:.3g}, param dev {param_dev:.3g}")
    assert loss_dev <= RTOL
    assert param_dev <= RTOL
    # The balancer changed the update: the same weights under `sum` train other parameters.
    plain = StackedTrainer([small(s) for s in SEEDS], SEEDS, config, "log")
    for w in random_weights(20, len(SEEDS)):
        plain.step(w)
    assert param_deviation(plain, 0, refs[0].model) > 1e-3


def test_a_balancer_s_state_is_per_slot_and_resets_with_the_slot() -> None:
    stacked, refs = balanced_pair("db_mtl", {})
    weights = random_weights(12, len(SEEDS))
    for w in weights[:6]:
        stacked.step(w)
        for i, ref in enumerate(refs):
            ref.step(w[i])
    states = stacked.state_dict()["balancers"]
    assert [s["step"] for s in states] == [6] * len(SEEDS)
    emas = [s["ema"] for s in states]
    assert all(not torch.equal(emas[0], e) for e in emas[1:])  # own EMA per slot
    stacked.reset_slot(2, small(77), 77)
    fresh = MTLTrainer(small(77), make_weighting("si"), make_balancer("db_mtl"), CONFIG, seed=77)
    for w in weights[6:]:
        result = stacked.step(w)
        assert loss_deviation(result.losses[2], fresh.step(w[2]).losses) <= RTOL
        # The other slots go on with their own balancer state, as their MTLTrainer runs do.
        assert loss_deviation(result.losses[0], refs[0].step(w[0]).losses) <= RTOL
    assert [s["step"] for s in stacked.state_dict()["balancers"]] == [12, 12, 6, 12]


def test_a_diverged_slot_leaves_its_balancer_untouched() -> None:
    stacked, _ = balanced_pair("db_mtl", {})
    stacked.forward()
    stacked.apply(torch.ones(len(SEEDS), 3))
    stacked.forward(active=[True, False, True, True])
    stacked.apply(torch.ones(len(SEEDS), 3))
    assert [s["step"] for s in stacked.state_dict()["balancers"]] == [2, 1, 2, 2]


def test_state_dict_round_trip_with_a_balancer_is_bit_exact() -> None:
    weights = random_weights(20, len(SEEDS))
    a, _ = balanced_pair("db_mtl", {})
    for w in weights[:7]:
        a.step(w)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b, _ = balanced_pair("db_mtl", {})
    b.load_state_dict(torch.load(buffer, weights_only=True))
    for w in weights[7:]:
        assert torch.equal(a.step(w).losses, b.step(w).losses)
    pa, pb = snapshot(a), snapshot(b)
    assert all(torch.equal(pa[name], pb[name]) for name in pa)
    # A state saved without a balancer does not load into a trainer with one, and vice versa.
    plain = StackedTrainer([small(s) for s in SEEDS], SEEDS, CONFIG, "log")
    with pytest.raises(ValueError, match="0 balancer states, this trainer has 4"):
        b.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="4 balancer states, this trainer has 0"):
        plain.load_state_dict(b.state_dict())


def test_a_balancer_requiring_another_transform_is_refused() -> None:
    with pytest.raises(ValueError, match="requires the 'log' loss transform, the trainer uses"):
        StackedTrainer([small(3)], [3], CONFIG, "identity", balancer=make_balancer("db_mtl"))


def test_a_balancer_needs_a_model_that_declares_its_shared_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bench = small(3)
    model = bench.build_model()
    assert isinstance(model, HardParameterSharing)
    monkeypatch.setattr(HardParameterSharing, "shared_parameters", lambda self: [])
    with pytest.raises(ValueError, match="declares no shared parameters"):
        StackedTrainer([bench], [3], CONFIG, "log", balancer=make_balancer("db_mtl"))
    monkeypatch.delattr(HardParameterSharing, "shared_parameters")
    with pytest.raises(ValueError, match=r"has no shared_parameters\(\)"):
        StackedTrainer([bench], [3], CONFIG, "log", balancer=make_balancer("db_mtl"))
    # Without a balancer that reads per-task gradients, the split is not needed.
    StackedTrainer([bench], [3], CONFIG, "log", balancer=make_balancer("sum"))
