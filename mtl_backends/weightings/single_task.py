"""Single-task training inside the multi-task model (for STL references)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtl_backends.weightings.base import LossWeighting, StepContext


class SingleTask(LossWeighting):
    """Train one task alone: weight 1 on task ``task``, 0 on the others (raw loss).

    This is how single-task (STL) references are trained: the same model, data order and budget as
    the multi-task run, with only one task's loss. It is not in ``LOSS_WEIGHTINGS`` because it is a
    reference procedure, not a weighting method.

    Args:
        task: Index of the task to train.
    """

    label = "single task"

    transform = "identity"

    def __init__(self, task: int) -> None:
        self.task = task

    def __call__(self, context: StepContext) -> Tensor:
        """One-hot weights."""
        if not 0 <= self.task < context.n_tasks:
            raise ValueError(f"task index {self.task} out of range for {context.n_tasks} tasks")
        w = torch.zeros(context.n_tasks)
        w[self.task] = 1.0
        return w

    def __repr__(self) -> str:
        return f"SingleTask(task={self.task})"
