"""The networks of exported policies: ``SetPolicyNetwork`` (any T) and ``network_from_spec``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtl_backends.policy.network import (
    NETWORKS,
    PolicyNetwork,
    SetEncoder,
    SetPolicyNetwork,
    network_from_spec,
)
from tests.mtl_backends.policy._policies import set_network

F, G, A = 9, 3, 2  # feature table v2 and the interp map


def _obs(n_tasks: int, batch: int = 4, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.uniform(-3.0, 3.0, (batch, n_tasks * F + G)).astype(np.float32))


def _permuted(obs: torch.Tensor, perm: np.ndarray) -> torch.Tensor:
    """``obs`` with its tasks' feature blocks reordered by ``perm`` (globals unchanged)."""
    n_tasks = len(perm)
    tasks = obs[:, : n_tasks * F].reshape(len(obs), n_tasks, F)[:, torch.from_numpy(perm)]
    return torch.cat([tasks.reshape(len(obs), -1), obs[:, n_tasks * F :]], dim=1)


def _net(output: str = "tanh", gain: float = 1.5, **kw: object) -> SetPolicyNetwork:
    net = set_network(gain=gain, output=output, **kw)  # type: ignore[arg-type]
    return net.eval()


# -- one set of weights, any T ----------------------------------------------------------------
def test_one_network_runs_at_every_t_and_its_entries_are_per_task_and_global() -> None:
    net = _net()
    for n_tasks in (1, 2, 5, 11, 20):
        obs = _obs(n_tasks, seed=n_tasks)
        with torch.no_grad():
            out = net(obs)
        assert out.shape == (4, n_tasks + A) and net.action_dim(n_tasks) == n_tasks + A
        assert bool((out.abs() < 1).all())  # tanh output
        # Row by row equals the batch (no mixing across the batch).
        with torch.no_grad():
            rows = torch.cat([net(obs[i : i + 1]) for i in range(len(obs))])
        torch.testing.assert_close(rows, out, rtol=0, atol=1e-6)
    # The per-task entry of a task depends on its own features: changing task 0's features
    # changes a_0 (and, through the pooled context, possibly the others), never the shape.
    obs = _obs(3)
    other = obs.clone()
    other[:, :F] += 1.0
    with torch.no_grad():
        a, b = net(obs), net(other)
    assert (a[:, 0] - b[:, 0]).abs().min() > 1e-4


def test_two_tasks_with_identical_features_get_identical_entries() -> None:
    net = _net()
    obs = _obs(4)
    obs[:, 2 * F : 3 * F] = obs[:, 0:F]  # task 2 is a copy of task 0
    with torch.no_grad():
        out = net(obs)
    torch.testing.assert_close(out[:, 2], out[:, 0], rtol=0, atol=0)
    assert (out[:, 1] - out[:, 0]).abs().max() > 1e-3  # the others differ


def test_a_single_task_pools_to_its_own_embedding() -> None:
    """With T = 1 the mean and the max of the embeddings are both the task's embedding."""
    net = _net()
    obs = _obs(1)
    tasks, globals_ = net.encoder.split(obs)
    with torch.no_grad():
        emb, context = net.encoder(tasks, globals_)
    h = net.encoder.hidden
    torch.testing.assert_close(context[:, :h], emb[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(context[:, h : 2 * h], emb[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(context[:, 2 * h :], globals_ * net.encoder.global_scale)
    assert net.encoder.context_dim == 2 * h + G == context.shape[-1]


# -- permutations ---------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    n_tasks=st.integers(1, 12), seed=st.integers(0, 2**16), output=st.sampled_from(["tanh", "clip"])
)
def test_permuting_tasks_permutes_task_entries_and_keeps_global_entries(
    n_tasks: int, seed: int, output: str
) -> None:
    net = _net(output)
    obs = _obs(n_tasks, batch=3, seed=seed)
    perm = np.random.default_rng(seed).permutation(n_tasks)
    with torch.no_grad():
        raw, raw_p = (net.raw(*net.encoder.split(x)) for x in (obs, _permuted(obs, perm)))
        out, out_p = net(obs), net(_permuted(obs, perm))
    for a, b in ((raw, raw_p), (out, out_p)):
        torch.testing.assert_close(b[:, :n_tasks], a[:, :n_tasks][:, perm], rtol=0, atol=1e-6)
        torch.testing.assert_close(b[:, n_tasks:], a[:, n_tasks:], rtol=0, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(
    n_tasks=st.integers(1, 8),
    pad=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    fill=st.floats(-50.0, 50.0),
)
def test_padded_and_masked_raw_equals_unpadded(
    n_tasks: int, pad: int, seed: int, fill: float
) -> None:
    """Padding rows (any values) that the mask leaves out change nothing."""
    net = _net()
    obs = _obs(n_tasks, batch=3, seed=seed)
    tasks, globals_ = net.encoder.split(obs)
    padded = torch.cat([tasks, torch.full((3, pad, F), fill)], dim=1)
    mask = torch.cat([torch.ones(3, n_tasks), torch.zeros(3, pad)], dim=1).bool()
    with torch.no_grad():
        plain = net.raw(tasks, globals_)
        masked = net.raw(padded, globals_, mask)
        everything = net.raw(tasks, globals_, torch.ones(3, n_tasks, dtype=torch.bool))
    assert masked.shape == (3, n_tasks + pad + A)
    torch.testing.assert_close(masked[:, :n_tasks], plain[:, :n_tasks], rtol=0, atol=1e-6)
    torch.testing.assert_close(masked[:, n_tasks + pad :], plain[:, n_tasks:], rtol=0, atol=1e-6)
    # An all-true mask is no mask.
    torch.testing.assert_close(everything, plain, rtol=0, atol=1e-6)


def test_padding_that_is_not_masked_does_change_the_action() -> None:
    """The mask is what keeps padding out (a control for the test above)."""
    net = _net()
    tasks, globals_ = net.encoder.split(_obs(2))
    padded = torch.cat([tasks, torch.full((4, 1, F), 5.0)], dim=1)
    with torch.no_grad():
        plain, unmasked = net.raw(tasks, globals_), net.raw(padded, globals_)
    assert (unmasked[:, :2] - plain[:, :2]).abs().max() > 1e-3


# -- layout, scales, spec ---------------------------------------------------------------------
def test_split_reads_the_task_major_layout_and_refuses_other_lengths() -> None:
    enc = SetEncoder(F, G, hidden=4)
    obs = torch.arange(3 * F + G, dtype=torch.float32)[None]
    tasks, globals_ = enc.split(obs)
    assert tasks.shape == (1, 3, F) and globals_.tolist() == [[27.0, 28.0, 29.0]]
    assert tasks[0, 1].tolist() == [float(v) for v in range(F, 2 * F)]
    for length in (G, G + F - 1, 2 * F + G + 1, F - 1):
        with pytest.raises(ValueError) as err:
            enc.split(torch.zeros(1, length))
        assert str(err.value) == (
            f"observation of {length} entries is not T * {F} task features + {G} global "
            "features for any T >= 1"
        )


def test_input_scales_multiply_the_features() -> None:
    scale = [0.5] * F
    scaled = set_network(seed=4, task_scale=scale, global_scale=[2.0] * G)
    plain = set_network(seed=4)  # the same weights, unit scales
    obs = _obs(3)
    tasks, globals_ = scaled.encoder.split(obs)
    with torch.no_grad():
        got = scaled.raw(tasks, globals_)
        want = plain.raw(tasks * 0.5, globals_ * 2.0)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(ValueError, match=f"expected {F} scale entries, got \\(2,\\)"):
        SetPolicyNetwork(F, G, A, task_scale=[1.0, 1.0])


def test_spec_round_trip_rebuilds_the_same_function_with_the_state() -> None:
    net = set_network(seed=2, hidden=12, activation="relu", output="clip", task_scale=[0.1] * F)
    spec = net.spec()
    assert spec == {
        "kind": "set",
        "task_features": F,
        "global_features": G,
        "global_actions": A,
        "hidden": 12,
        "activation": "relu",
        "output": "clip",
    }
    for rebuilt in (SetPolicyNetwork.from_spec(spec), network_from_spec(spec)):
        assert isinstance(rebuilt, SetPolicyNetwork) and rebuilt.spec() == spec
        obs = _obs(5)
        with torch.no_grad():
            assert not torch.equal(rebuilt(obs), net(obs))  # fresh weights, unit scales
        rebuilt.load_state_dict(net.state_dict(), strict=True)
        assert torch.equal(rebuilt.encoder.task_scale, torch.full((F,), 0.1))
        with torch.no_grad():
            assert torch.equal(rebuilt(obs), net(obs))


def test_a_map_without_global_entries_has_no_global_head() -> None:
    net = SetPolicyNetwork(F, G, 0, hidden=8)
    assert net.global_head is None and net.action_dim(4) == 4
    assert not any(k.startswith("global_head") for k in net.state_dict())
    with torch.no_grad():
        assert net(_obs(4)).shape == (4, 4)


def test_network_from_spec_dispatches_on_kind_and_defaults_to_mlp() -> None:
    assert set(NETWORKS) == {"mlp", "set"}
    mlp = network_from_spec({"sizes": [20, 8, 3], "activation": "relu", "output": "tanh"})
    assert isinstance(mlp, PolicyNetwork) and mlp.sizes == [20, 8, 3]
    assert isinstance(network_from_spec({"kind": "mlp", "sizes": [4, 2]}), PolicyNetwork)
    with pytest.raises(ValueError) as err:
        network_from_spec({"kind": "transformer"})
    assert str(err.value) == "unknown network kind 'transformer'; valid choices: mlp, set"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_features": 0}, "a set network needs task_features >= 1, global_features >= 0"),
        ({"global_features": -1}, "a set network needs task_features >= 1"),
        ({"hidden": 0}, "hidden >= 1, got 9, 3, 0"),
        ({"global_actions": -1}, "global_actions must be >= 0, got -1"),
        ({"activation": "gelu"}, "unknown activation 'gelu'; valid choices: relu, tanh"),
        ({"output": "sigmoid"}, "unknown output 'sigmoid'; valid choices: tanh, clip"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"task_features": F, "global_features": G, "global_actions": A}
    with pytest.raises(ValueError, match=message):
        SetPolicyNetwork(**{**args, **kwargs})  # type: ignore[arg-type]
