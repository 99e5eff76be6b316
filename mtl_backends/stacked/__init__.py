"""Stacked training: N independent MTL runs of one configuration in one process (``torch.func``).

The engine of the batched environment (``igb_env.vector``): ``StackedTrainer`` steps N runs
together, ``SlotAdam`` keeps one Adam per run, ``check_stackable`` says which models can be
stacked. Each run equals the ``MTLTrainer`` run of the same seed to float rounding.
"""

from mtl_backends.stacked.adam import AdamImpl, SlotAdam
from mtl_backends.stacked.models import build_model, check_stackable
from mtl_backends.stacked.trainer import (
    StackedStepResult,
    StackedTrainer,
    check_stackable_config,
)

__all__ = [
    "AdamImpl",
    "SlotAdam",
    "StackedStepResult",
    "StackedTrainer",
    "build_model",
    "check_stackable",
    "check_stackable_config",
]
