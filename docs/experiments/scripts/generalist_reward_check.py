"""Which weighting does the generalist's training reward prefer on generalist_kinds.yaml's runs?

The return of the env reward (``val_log_improvement``, the generalist's) of EW and of IGBv1 on the
instances 0-4 of a ``generalist_kinds.yaml`` entry (the same ``instance_kwargs`` draw as the
``igb compare`` cells: wide variation, kinds and classes fixed)::

    python docs/experiments/scripts/generalist_reward_check.py \
        classification,classification,regression 2,2,2 [REWARD]

REWARD (default ``val_log_improvement``) names another env reward, e.g.
``val_log_metric_improvement``.
"""

from __future__ import annotations

import sys

import torch

from igb_env.config import load_env_config
from igb_env.rollouts import rollout_baseline

torch.set_num_threads(1)
kinds = sys.argv[1].split(",")
classes = [int(c) for c in sys.argv[2].split(",")]
reward = sys.argv[3] if len(sys.argv) > 3 else "val_log_improvement"
cfg = load_env_config(
    {
        "preset": "small",
        "action_mode": "interp",
        "feature_table": "v2",
        "reward": reward,
        "variation": "wide",
        "benchmark": {
            "name": "synthetic",
            "n_tasks": 3,
            "kinds": kinds,
            "classes": classes,
            "n_train": 2000,
            "n_val": 500,
            "n_test": 500,
            "input_dim": 50,
            "output_dim": 16,
            "hidden": [64, 64],
        },
        "train": {"steps": 1500, "batch_size": 64, "lr": 0.001, "base_window": [50, 100]},
        "instance_set": [0, 1, 2, 3, 4],
    }
)
for seed in range(5):
    out = {}
    for w in ("ew", "igbv1"):
        r = rollout_baseline(cfg, w, seed)
        out[w] = float(sum(r.rewards))
    print(
        seed,
        {k: round(v, 3) for k, v in out.items()},
        "EW - IGBv1:",
        round(out["ew"] - out["igbv1"], 3),
        flush=True,
    )
