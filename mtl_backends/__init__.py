"""mtl_backends: a multi-task learning library with no reinforcement-learning dependency.

Benchmarks, loss weightings, gradient balancers, the two-phase trainer, the improvable-gap tracker
and the Δm / Δp metrics. See DESIGN §1-3 in the project documentation.
"""

from mtl_backends.balancers import GRADIENT_BALANCERS, GradientBalancer, make_balancer
from mtl_backends.benchmarks import BENCHMARKS, Benchmark, make_benchmark
from mtl_backends.config import MethodSpec, RunConfig, TrainConfig, load_config
from mtl_backends.metrics import delta_m, delta_p, mean_rank
from mtl_backends.progress import FeatureSpec, GapTracker
from mtl_backends.registry import ConfigError
from mtl_backends.trainer import DivergenceError, EvalResult, MTLTrainer, StepResult
from mtl_backends.weightings import LOSS_WEIGHTINGS, LossWeighting, StepContext, make_weighting

__version__ = "0.1.0"

__all__ = [
    "BENCHMARKS",
    "GRADIENT_BALANCERS",
    "LOSS_WEIGHTINGS",
    "Benchmark",
    "ConfigError",
    "DivergenceError",
    "EvalResult",
    "FeatureSpec",
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
    "delta_m",
    "delta_p",
    "load_config",
    "make_balancer",
    "make_benchmark",
    "make_weighting",
    "mean_rank",
]
