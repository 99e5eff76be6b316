"""``Policy``: a loaded policy maps one observation to its action (one T, or any T for sets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_backends.policy import Policy, load_policy
from tests.mtl_backends.policy._policies import (
    SPEC_V2,
    random_policy,
    random_set_policy,
    set_network,
    set_sidecar,
)


def test_a_set_policy_has_no_fixed_t_or_observation_length(tmp_path) -> None:
    policy = load_policy(random_set_policy(tmp_path / "s", mode="residual"))
    assert policy.n_tasks is None and policy.obs_dim is None
    assert (policy.action_mode, policy.tau, policy.steps_per_action) == ("residual", 1.0, 5)
    assert policy.feature_spec == SPEC_V2
    obs = np.random.default_rng(0).uniform(-1, 1, 4 * 9 + 3).astype(np.float32)
    # Without statistics the network sees the observation itself (float32).
    assert torch.equal(policy.normalize(torch.from_numpy(obs).double()), torch.from_numpy(obs))
    action = policy.act(obs)
    assert action.dtype == torch.float32 and action.shape == (4,)  # residual: T entries
    # A [1, D] observation is the same observation.
    assert torch.equal(policy.act(obs[None]), action)


@pytest.mark.parametrize("length", [3, 11, 9 * 4 + 3 + 1, 9 * 2 + 2])
def test_a_set_policy_refuses_observations_of_no_t(length: int) -> None:
    policy = Policy(set_network(), set_sidecar())
    with pytest.raises(ValueError) as err:
        policy.act(np.zeros(length, dtype=np.float32))
    assert str(err.value) == (
        f"observation of {length} entries is not T * 9 task features + 3 global features for "
        "any T >= 1"
    )


def test_an_mlp_policy_refuses_another_observation_length(tmp_path) -> None:
    policy = load_policy(random_policy(tmp_path / "m"))
    assert policy.n_tasks == 3 and policy.obs_dim == 20
    with pytest.raises(ValueError) as err:
        policy.act(np.zeros(29, dtype=np.float32))  # a T = 4 observation of the same table
    assert str(err.value) == "observation must have 20 entries, got shape (29,)"
