"""mtl_backends: a multi-task learning library with no reinforcement-learning dependency.

Benchmarks, loss weightings, gradient balancers, the two-phase trainer and its update rules, the
improvable-gap tracker and its feature table, exported-policy files, and the Δm / Δp metrics. The
design is described in ``docs/architecture.md``.
"""

from mtl_backends._version import __version__
from mtl_backends.balancers import GRADIENT_BALANCERS, GradientBalancer, make_balancer
from mtl_backends.benchmarks import BENCHMARKS, Benchmark, make_benchmark
from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, RunConfig, TrainConfig, load_config
from mtl_backends.features import FeatureSpec, FeatureTable
from mtl_backends.gaps import GapTracker
from mtl_backends.metrics import delta_m, delta_p, mean_rank
from mtl_backends.registry import ConfigError
from mtl_backends.trainer import DivergenceError, EvalResult, MTLTrainer, StepResult
from mtl_backends.weightings import LOSS_WEIGHTINGS, LossWeighting, StepContext, make_weighting

__all__ = [
    "BENCHMARKS",
    "GRADIENT_BALANCERS",
    "LOSS_WEIGHTINGS",
    "Benchmark",
    "ConfigError",
    "DivergenceError",
    "EvalResult",
    "FeatureSpec",
    "FeatureTable",
    "GapTracker",
    "GradientBalancer",
    "LossWeighting",
    "MTLTrainer",
    "MethodSpec",
    "RunConfig",
    "StepContext",
    "StepResult",
    "TrainConfig",
    "__version__",
    "build_trainer",
    "delta_m",
    "delta_p",
    "load_config",
    "make_balancer",
    "make_benchmark",
    "make_weighting",
    "mean_rank",
]
