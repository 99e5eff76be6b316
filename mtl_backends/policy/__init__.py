"""Exported weighting policies without SB3 or gymnasium: file format, network, runtime, action maps.

``mtl_backends.weightings.PolicyWeighting`` runs a policy inside ``MTLTrainer`` or a user's own
training loop; ``agents.export`` writes one from a trained SB3 agent; ``igb_env`` turns the agent's
actions into weights with the same ``action_maps``.
"""

from mtl_backends.policy.action_maps import (
    ACTION_MAPS,
    ActionMap,
    HeldAction,
    action_to_weights,
    check_action,
    get_action_map,
    make_action_map,
)
from mtl_backends.policy.files import load_policy, save_policy
from mtl_backends.policy.format import (
    FORMAT,
    FORMAT_VERSION,
    POLICY_FILE,
    SIDECAR_FILE,
    build_sidecar,
    validate_sidecar,
    versions,
)
from mtl_backends.policy.network import ACTIVATIONS, PolicyNetwork
from mtl_backends.policy.runtime import Policy

__all__ = [
    "ACTION_MAPS",
    "ACTIVATIONS",
    "FORMAT",
    "FORMAT_VERSION",
    "POLICY_FILE",
    "SIDECAR_FILE",
    "ActionMap",
    "HeldAction",
    "Policy",
    "PolicyNetwork",
    "action_to_weights",
    "build_sidecar",
    "check_action",
    "get_action_map",
    "load_policy",
    "make_action_map",
    "save_policy",
    "validate_sidecar",
    "versions",
]
