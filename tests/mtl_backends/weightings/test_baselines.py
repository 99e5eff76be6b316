"""The baseline loss weightings (UW, DWA, RLW, GLS, GradNorm, FAMO, IMTL-L): their papers' formulas.

Hand values on small fixed inputs, hypothesis properties of the formulas, the gradients the
training objective gives (each task's once; learnable parameters only through the extra term),
learnable state in checkpoints and exact resume inside ``MTLTrainer``.
"""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from mtl_backends import MTLTrainer, TrainConfig, make_balancer, make_weighting
from mtl_backends.benchmarks import Synthetic
from mtl_backends.gaps import GapTracker
from mtl_backends.transforms import apply_transform
from mtl_backends.weightings import (
    DWA,
    FAMO,
    GLS,
    IMTLL,
    LOSS_WEIGHTINGS,
    RLW,
    UW,
    GradNorm,
    StepContext,
)

BASELINES = ("uw", "dwa", "rlw", "gls", "gradnorm", "famo", "imtl_l")


def _context(
    losses: list[float] | Tensor,
    step: int = 0,
    epoch: int = 0,
    steps_per_epoch: int = 10,
    lower: list[float] | None = None,
    **extra: Any,
) -> StepContext:
    t = torch.as_tensor(losses, dtype=torch.float32)
    tracker = GapTracker(
        int(t.numel()),
        base_window=(0, 1),
        lower_bounds=None if lower is None else torch.tensor(lower, dtype=torch.float64),
    )
    tracker.update(t, step, 1.0)
    return StepContext(t, tracker, step, epoch, steps_per_epoch, 1.0, **extra)


def test_every_baseline_is_registered() -> None:
    for name in BASELINES:
        assert name in LOSS_WEIGHTINGS
        assert make_weighting(name).label is not None


# -- UW and IMTL-L: learnable parameters through the extra term ------------------------------------
def _joint_gradients(
    weighting: UW | IMTLL, joint: Any, theta: Tensor
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Gradients (θ, s) of the trainer's objective Σ w L + extra and of the paper's objective."""
    params = weighting.parameters()[0]
    losses = torch.stack([(theta**2).sum(), (theta - 1).abs().sum() + 0.5, (2 * theta).exp().sum()])
    w = weighting(_context(losses.detach().tolist()))
    extra = weighting.extra_loss(losses)
    ours = torch.autograd.grad((w * losses).sum() + extra, [theta, params], retain_graph=True)
    paper = torch.autograd.grad(joint(losses, params), [theta, params])
    return (ours[0], ours[1]), (paper[0], paper[1])


def test_uw_gradients_are_the_papers_objective() -> None:
    uw = UW()
    uw.reset(3)
    with torch.no_grad():
        uw.log_vars.copy_(torch.tensor([0.3, -0.7, 1.1]))
    theta = torch.tensor([0.2, -0.4, 0.9], requires_grad=True)
    ours, paper = _joint_gradients(
        uw, lambda losses, s: (0.5 * torch.exp(-s) * losses + 0.5 * s).sum(), theta
    )
    torch.testing.assert_close(ours[0], paper[0])
    torch.testing.assert_close(ours[1], paper[1])


def test_uw_hand_values_and_stationary_point() -> None:
    uw = UW()
    uw.reset(2)
    torch.testing.assert_close(uw(_context([4.0, 0.5])), torch.tensor([0.5, 0.5]))
    # The extra term moves s toward log L: at s = log L its gradient vanishes.
    losses = torch.tensor([4.0, 0.5])
    with torch.no_grad():
        uw.log_vars.copy_(losses.log())
    (grad,) = torch.autograd.grad(uw.extra_loss(losses), uw.log_vars)
    torch.testing.assert_close(grad, torch.zeros(2), atol=1e-7, rtol=0)
    # Weights ½ e^{-s} = ½ / L there.
    torch.testing.assert_close(uw(_context([4.0, 0.5])), torch.tensor([0.125, 1.0]))


def test_imtl_l_gradients_and_stationary_point() -> None:
    imtl = IMTLL()
    imtl.reset(3)
    with torch.no_grad():
        imtl.log_scales.copy_(torch.tensor([0.5, -0.2, 0.1]))
    theta = torch.tensor([0.2, -0.4, 0.9], requires_grad=True)
    ours, paper = _joint_gradients(imtl, lambda losses, s: (torch.exp(s) * losses - s).sum(), theta)
    torch.testing.assert_close(ours[0], paper[0])
    torch.testing.assert_close(ours[1], paper[1])
    losses = torch.tensor([4.0, 0.5, 2.0])
    with torch.no_grad():
        imtl.log_scales.copy_(-losses.log())
    (grad,) = torch.autograd.grad(imtl.extra_loss(losses), imtl.log_scales)
    torch.testing.assert_close(grad, torch.zeros(3), atol=1e-6, rtol=0)
    # Scaled losses e^s L are then all 1.
    torch.testing.assert_close(imtl(_context(losses.tolist())) * losses, torch.ones(3))


# -- DWA ------------------------------------------------------------------------------------------
def test_dwa_hand_values() -> None:
    dwa = DWA()
    dwa.reset(2)
    e = 4  # steps per epoch
    # Epoch 0: losses (4, 2) then (2, 2): mean (3, 2). Epoch 1: (3, 1) twice... mean (1.5, 1).
    epochs = [[[4.0, 2.0], [2.0, 2.0], [4.0, 2.0], [2.0, 2.0]], [[1.5, 1.0]] * 4]
    step = 0
    for epoch, rows in enumerate(epochs):
        for row in rows:
            ctx = _context(row, step=step, epoch=epoch, steps_per_epoch=e)
            assert dwa(ctx).tolist() == [1.0, 1.0]  # the first two epochs use unit weights
            dwa.after_step(ctx)
            step += 1
    # r = (1.5/3, 1/2) = (0.5, 0.5): equal, so w = (1, 1); change epoch 1 to make them differ.
    ctx = _context([1.0, 1.0], step=step, epoch=2, steps_per_epoch=e)
    torch.testing.assert_close(dwa(ctx), torch.ones(2))
    dwa.load_state_dict(
        {
            "epoch": 1,
            "sums": None,
            "count": 0,
            "means": {0: torch.tensor([3.0, 2.0]).double(), 1: torch.tensor([1.5, 1.8]).double()},
        }
    )
    r = torch.tensor([0.5, 0.9], dtype=torch.float64)
    expected = 2 * torch.exp(r / 2) / torch.exp(r / 2).sum()
    torch.testing.assert_close(dwa(ctx).double(), expected, rtol=1e-6, atol=1e-7)


@settings(max_examples=20, deadline=None)
@given(
    before=st.lists(st.floats(0.01, 100.0), min_size=2, max_size=6),
    factors=st.lists(st.floats(0.05, 2.0), min_size=6, max_size=6),
    temperature=st.floats(0.5, 5.0),
)
def test_dwa_weights_sum_to_t_and_order_by_rate(
    before: list[float], factors: list[float], temperature: float
) -> None:
    n = len(before)
    b = torch.tensor(before, dtype=torch.float64)
    last = b * torch.tensor(factors[:n], dtype=torch.float64)
    dwa = DWA(temperature=temperature)
    dwa.reset(n)
    dwa.load_state_dict({"epoch": 1, "sums": None, "count": 0, "means": {0: b, 1: last}})
    w = dwa(_context([1.0] * n, step=20, epoch=2)).double()
    assert abs(float(w.sum()) - n) < 1e-4
    rate = last / b
    for i in range(n):
        for j in range(n):
            if float(rate[i]) > float(rate[j]) + 1e-9:
                assert float(w[i]) >= float(w[j])


# -- RLW ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("distribution", ["normal", "dirichlet"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), n_tasks=st.integers(2, 8))
def test_rlw_weights_on_the_simplex_and_reproducible(
    distribution: str, seed: int, n_tasks: int
) -> None:
    draws = []
    for _ in range(2):
        rlw = RLW(distribution)
        rlw.reset(n_tasks, torch.Generator().manual_seed(seed))
        draws.append(torch.stack([rlw(_context([1.0] * n_tasks)) for _ in range(3)]))
    assert torch.equal(draws[0], draws[1])
    assert bool((draws[0] > 0).all())
    torch.testing.assert_close(draws[0].sum(dim=1), torch.ones(3), rtol=0, atol=1e-6)
    assert not torch.equal(draws[0][0], draws[0][1])  # a new draw every step


def test_rlw_distributions_match_their_moments() -> None:
    # softmax of N(0, I): symmetric, mean 1/T; Dir(1): mean 1/T and Var = (T-1) / (T² (T+1)).
    n, draws = 3, 4000
    for distribution in ("normal", "dirichlet"):
        rlw = RLW(distribution)
        rlw.reset(n, torch.Generator().manual_seed(0))
        w = torch.stack([rlw(_context([1.0] * n)) for _ in range(draws)]).double()
        torch.testing.assert_close(
            w.mean(dim=0), torch.full((n,), 1 / n).double(), atol=0.01, rtol=0
        )
        if distribution == "dirichlet":
            var = (n - 1) / (n**2 * (n + 1))
            torch.testing.assert_close(
                w.var(dim=0), torch.full((n,), var).double(), atol=0.008, rtol=0
            )
    with pytest.raises(ValueError, match="normal, dirichlet"):
        RLW("uniform")


# -- GLS ------------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(
    values=st.lists(st.floats(0.01, 50.0), min_size=2, max_size=6),
    lower=st.floats(-1.0, 0.0),
)
def test_gls_gradient_is_the_geometric_mean_gradient(values: list[float], lower: float) -> None:
    n = len(values)
    raw = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    bounds = torch.full((n,), lower, dtype=torch.float64)
    w = GLS()(_context(values, lower=[lower] * n)).double()
    objective = (w * apply_transform("log", raw, bounds)).sum()
    (ours,) = torch.autograd.grad(objective, raw)
    raw2 = raw.detach().clone().requires_grad_(True)
    geometric = torch.exp(torch.log(raw2 - bounds + 1e-8).mean())
    (paper,) = torch.autograd.grad(geometric, raw2)
    torch.testing.assert_close(ours, paper, rtol=1e-5, atol=1e-9)


def test_gls_hand_value() -> None:
    # Losses 1, 4, 16: G = 4, weights G/T = 4/3 each.
    torch.testing.assert_close(GLS()(_context([1.0, 4.0, 16.0])), torch.full((3,), 4 / 3))


# -- FAMO -----------------------------------------------------------------------------------------
def test_famo_hand_values_and_first_update() -> None:
    famo = FAMO(w_lr=0.025, gamma=0.01)
    famo.reset(3)
    before = torch.tensor([1.0, 2.0, 4.0])
    after = torch.tensor([0.5, 2.0, 3.0])
    ctx = _context(before.tolist(), batch_losses=lambda: after)
    # Equal logits: w_t = (1/T) / Σ_s (1/T)/L_s = 1 / Σ 1/L = 1/1.75 for every task.
    torch.testing.assert_close(famo(ctx), torch.full((3,), 1 / 1.75), rtol=1e-6, atol=1e-7)
    famo.after_step(ctx)
    # δ = log before − log after; ∇_ξ softmax(ξ)ᵀδ at ξ = 0 is (δ − mean δ)/T; Adam's first step
    # moves each logit by −lr · sign (the weight decay term γξ is 0 at ξ = 0).
    delta = before.double().log() - after.double().log()
    grad = (delta - delta.mean()) / 3
    expected = -0.025 * torch.sign(grad)
    torch.testing.assert_close(famo.logits.detach(), expected, rtol=1e-5, atol=1e-9)
    # Tasks whose log loss fell less than the mean (tasks 1 and 2) gain share z, task 0 loses it.
    z = torch.softmax(famo.logits.detach(), dim=0)
    assert abs(float(z[1]) - float(z[2])) < 1e-6 and float(z[2]) > 1 / 3 > float(z[0])


def test_famo_without_a_trainer_keeps_its_logits() -> None:
    famo = FAMO()
    famo.reset(2)
    ctx = _context([1.0, 2.0])
    famo(ctx)
    famo.after_step(ctx)
    assert famo.updates == 0 and torch.equal(famo.logits.detach(), torch.zeros(2).double())


# -- GradNorm -------------------------------------------------------------------------------------
def test_gradnorm_hand_values() -> None:
    # Two tasks on one shared matrix W (2×1) with L_1 = (W₀ x)², L_2 = 3 (W₁ x)... written so that
    # ‖∇_W L_t‖ is known: W = [[1], [2]], x = 1, L_1 = W₀², L_2 = 0.5 W₁²:
    # ∇_W L_1 = (2, 0), ∇_W L_2 = (0, 2): norms 2 and 2.
    weight = torch.tensor([[1.0], [2.0]], requires_grad=True)
    losses = torch.stack([weight[0, 0] ** 2, 0.5 * weight[1, 0] ** 2])  # (1, 2)
    gn = GradNorm(alpha=1.0)
    gn.reset(2)
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([1.5, 0.5]))
    first = _context([2.0, 1.0], shared_parameters=(weight,))  # L(0) = (2, 1)
    gn(first)
    gn._shared = ()
    ctx = _context(losses.detach().tolist(), step=1, shared_parameters=(weight,))
    w = gn(ctx)
    torch.testing.assert_close(w, torch.tensor([1.5, 0.5]))
    l_grad = gn.extra_loss(losses)
    assert l_grad is not None
    # G = w ⊙ (2, 2) = (3, 1), Ḡ = 2; L̃ = (1/2, 2), r = L̃ / mean = (0.4, 1.6);
    # target = Ḡ r = (0.8, 3.2); L_grad = |3 − 0.8| + |1 − 3.2| = 4.4.
    assert abs(float(l_grad) - 4.4) < 1e-6
    (grad,) = torch.autograd.grad(l_grad, gn.task_weights)
    # ∂/∂w_t = sign(G_t − target_t) ‖∇_W L_t‖ = (+2, −2).
    torch.testing.assert_close(grad, torch.tensor([2.0, -2.0]))
    # The extra term reaches w only: no gradient flows to W through it.
    assert not l_grad.requires_grad or weight not in _leaves(l_grad)


def _leaves(t: Tensor) -> set[Any]:
    seen, stack, leaves = set(), [t.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):
            leaves.add(fn.variable)
        stack.extend(f for f, _ in fn.next_functions)
    return leaves


def test_gradnorm_renormalises_and_needs_a_matrix() -> None:
    gn = GradNorm()
    gn.reset(3)
    with torch.no_grad():
        gn.task_weights.copy_(torch.tensor([2.0, -0.5, 1.0]))
    gn.after_step(_context([1.0, 1.0, 1.0]))
    assert abs(float(gn.task_weights.sum()) - 3.0) < 1e-6
    assert float(gn.task_weights.min()) > 0
    with pytest.raises(ValueError, match="layer='all'"):
        gn(_context([1.0, 1.0, 1.0], shared_parameters=(torch.zeros(3, requires_grad=True),)))
    with pytest.raises(ValueError, match="last, all"):
        GradNorm(layer="first")


# -- inside MTLTrainer ----------------------------------------------------------------------------
def _trainer(bench: Synthetic, name: str, balancer: str = "sum", **kwargs: Any) -> MTLTrainer:
    cfg = TrainConfig(steps=24, batch_size=20, base_window=(2, 4))
    return MTLTrainer(bench, make_weighting(name, **kwargs), make_balancer(balancer), cfg, seed=5)


def _round_trip(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", BASELINES)
def test_exact_resume_in_trainer(name: str, tiny_benchmark: Synthetic) -> None:
    # Steps per epoch = 200 / 20 = 10, so DWA's epoch means are exercised across the split.
    full = _trainer(tiny_benchmark, name)
    full.fit(record=False)
    first = _trainer(tiny_benchmark, name)
    first.fit(steps=13, record=False)
    state = _round_trip(first.state_dict())
    resumed = _trainer(tiny_benchmark, name)
    resumed.load_state_dict(state)
    resumed.fit(record=False)
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert _same(full.weighting.state_dict(), resumed.weighting.state_dict())


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor):
        return isinstance(b, Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize(
    ("name", "attribute"),
    [("uw", "log_vars"), ("imtl_l", "log_scales"), ("gradnorm", "task_weights")],
)
def test_learnable_state_trains_and_is_checkpointed(
    name: str, attribute: str, tiny_benchmark: Synthetic
) -> None:
    trainer = _trainer(tiny_benchmark, name)
    param = getattr(trainer.weighting, attribute)
    start = param.detach().clone()
    trainer.fit(record=False)
    assert not torch.equal(param.detach(), start), "the run's optimizer did not move it"
    state = trainer.state_dict()
    assert torch.equal(state["weighting"][attribute], param.detach())
    # It is in the trainer's optimizer (its own group, no weight decay), so its Adam state is too.
    groups = trainer.optimizer.param_groups
    assert any(p is param for p in groups[-1]["params"]) and groups[-1]["weight_decay"] == 0.0
    assert param in trainer.optimizer.state


def test_famo_updates_from_the_same_batch_after_the_step(tiny_benchmark: Synthetic) -> None:
    trainer = _trainer(tiny_benchmark, "famo")
    calls: list[Tensor] = []
    original = trainer._batch_losses

    def spy() -> Tensor:
        out = original()
        calls.append(out)
        return out

    trainer._batch_losses = spy  # type: ignore[method-assign]
    trainer.forward()
    x, y = trainer._batch
    trainer.apply()
    with torch.no_grad():
        expected = trainer.benchmark.losses(trainer.model(x), y)
    assert len(calls) == 1 and torch.equal(calls[0], expected)
    assert isinstance(trainer.weighting, FAMO) and trainer.weighting.updates == 1


def test_gradnorm_leaves_the_models_gradient_alone(tiny_benchmark: Synthetic) -> None:
    # With the weights frozen at their current values, the model's gradient is Σ w_t ∇L_t whether
    # or not the GradNorm term is added (it reaches w only).
    with_term = _trainer(tiny_benchmark, "gradnorm")
    with_term.forward()
    with_term.apply()
    assert with_term.weighting.parameters()[0].grad is not None
    plain = MTLTrainer(
        tiny_benchmark,
        make_weighting("ew"),
        make_balancer("sum"),
        TrainConfig(steps=24, batch_size=20, base_window=(2, 4)),
        seed=5,
    )
    plain.forward()
    plain.apply()
    # First step: w = 1 for GradNorm, like EW; the same seed gives the same model and batch.
    for a, b in zip(with_term.model.parameters(), plain.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", BASELINES)
def test_weights_are_finite_and_sized_through_a_run(name: str, tiny_benchmark: Synthetic) -> None:
    trainer = _trainer(tiny_benchmark, name)
    history = trainer.fit()
    weights = torch.tensor(history.weights)
    assert weights.shape == (24, 3) and bool(torch.isfinite(weights).all())
    assert bool((weights > 0).all())
    if name in ("rlw",):
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(24), atol=1e-6, rtol=0)
    if name in ("dwa", "gradnorm"):
        torch.testing.assert_close(weights.sum(dim=1), torch.full((24,), 3.0), atol=1e-4, rtol=0)
    assert math.isfinite(float(trainer.evaluate("val").losses[0]))


def test_methods_page_lists_every_method() -> None:
    # Every registered weighting and balancer has a table row (`| `name`` ...) on the Methods page.
    from pathlib import Path

    from mtl_backends.balancers import GRADIENT_BALANCERS

    root = Path(__file__).resolve().parents[3]
    page = (root / "docs" / "site" / "guide" / "methods.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| ")]
    missing = [
        name
        for name in (*LOSS_WEIGHTINGS, *GRADIENT_BALANCERS, "igbv2")
        if not any(f"`{name}`" in row.split("|")[1] for row in rows)
    ]
    assert not missing, f"docs/site/guide/methods.md lacks table rows for {missing}"
