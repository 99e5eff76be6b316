"""Instance sets: which instance seeds an env trains on (or is evaluated on), and in which order.

An *instance* is a benchmark seed: it fixes the data (and, with ``variation``, the benchmark's
sampled variation such as task scales), the model initialisation and the batch order. A set is
declared in the env config (``instance_set`` for training, ``test_set`` for held-out evaluation)
as either

* a list of seeds: ``[1000, 1001, 1002]``;
* a range, all of it: ``{"range": [0, 100]}`` (seeds 0..99, kept lazy);
* a seeded sample of a range: ``{"range": [0, 1000000], "count": 64, "seed": 7}`` (64 distinct
  seeds drawn with ``numpy.random.default_rng(SeedSequence(7))``, in draw order).

``InstanceSampler`` walks a set in ``round_robin`` order (the cursor starts at 0, or at an
offset drawn from the env's ``np_random`` when the env is reset with a seed, so vectorised sub-envs
start at different places) or ``random`` order (uniform draws from the env's ``np_random``). Its
state (the cursor) is what an agent checkpoint saves, together with the ``np_random`` state.

``BenchmarkCache`` builds the benchmark of an instance (``mtl_backends.benchmarks.instance_kwargs``)
and keeps the last few; ``check_instance_set`` refuses a set whose instances differ in ``T``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mtl_backends.benchmarks import (
    BENCHMARKS,
    Benchmark,
    instance_kwargs,
    instance_seeded,
    make_benchmark,
)
from mtl_backends.config import MethodSpec, from_dict
from mtl_backends.registry import ConfigError

INSTANCE_ORDERS: tuple[str, ...] = ("random", "round_robin")


@dataclass(frozen=True)
class InstanceSet:
    """A declared set of instance seeds (see the module docstring for the forms).

    Attributes:
        seeds: Explicit seeds (``None`` for a range).
        range: ``[low, high)`` of seeds (``None`` for explicit seeds).
        count: With ``range``: the number of distinct seeds to sample from it (``None``: all).
        seed: With ``count``: the seed of the sample.
    """

    seeds: tuple[int, ...] | None = None
    range: tuple[int, int] | None = None
    count: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.seeds is None) == (self.range is None):
            raise ConfigError("an instance set is either a list of seeds or a range, not both")
        if self.seeds is not None:
            if not self.seeds:
                raise ConfigError("an instance set needs at least one seed")
            if any(s < 0 for s in self.seeds):
                raise ConfigError(f"instance seeds must be >= 0, got {list(self.seeds)}")
            if self.count is not None:
                raise ConfigError("count applies to a range, not to a list of seeds")
        if self.range is not None:
            low, high = self.range
            if not 0 <= low < high:
                raise ConfigError(
                    f"instance range must be [low, high) with 0 <= low < high, got {[low, high]}"
                )
            if self.count is not None and not 1 <= self.count <= high - low:
                raise ConfigError(
                    f"count must be between 1 and the range size {high - low}, got {self.count}"
                )

    @classmethod
    def parse(cls, value: Any, where: str = "instance set") -> InstanceSet | None:
        """An ``InstanceSet`` from its config form (list, mapping, ``InstanceSet`` or ``None``).

        Raises:
            ConfigError: Any other form, or invalid values.
        """
        if value is None or isinstance(value, InstanceSet):
            return value
        if isinstance(value, list | tuple):
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ConfigError(f"{where}: seeds must be integers, got {list(value)!r}")
            return cls(seeds=tuple(int(v) for v in value))
        if isinstance(value, Mapping):
            return from_dict(cls, value, where)
        raise ConfigError(
            f"{where}: expected a list of seeds or a mapping like "
            f"{{'range': [low, high], 'count': n, 'seed': s}}, got {value!r}"
        )

    def resolve(self) -> Sequence[int]:
        """The seeds, in set order (a lazy ``range`` for a whole range)."""
        if self.seeds is not None:
            return self.seeds
        assert self.range is not None
        low, high = self.range
        if self.count is None:
            return range(low, high)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed))
        picks = rng.choice(high - low, size=self.count, replace=False)
        return tuple(int(low + p) for p in picks)

    def to_config(self) -> list[int] | dict[str, Any]:
        """The compact config form that ``parse`` reads back."""
        if self.seeds is not None:
            return list(self.seeds)
        assert self.range is not None
        out: dict[str, Any] = {"range": list(self.range)}
        if self.count is not None:
            out.update(count=self.count, seed=self.seed)
        return out


def overlap(a: Sequence[int], b: Sequence[int]) -> list[int]:
    """Seeds in both ``a`` and ``b`` (at most 5 of them; cheap for lazy ranges)."""
    if isinstance(a, range) and isinstance(b, range):
        low, high = max(a.start, b.start), min(a.stop, b.stop)
        return list(range(low, min(high, low + 5))) if low < high else []
    if isinstance(a, range):
        a, b = b, a
    container = b if isinstance(b, range) else set(b)
    return [s for s in a if s in container][:5]


class InstanceSampler:
    """Walks an instance set in ``round_robin`` or ``random`` order.

    Args:
        instances: The set's seeds (a sequence; a ``range`` is never materialised).
        order: ``round_robin`` or ``random``.
    """

    def __init__(self, instances: Sequence[int], order: str) -> None:
        if order not in INSTANCE_ORDERS:
            raise ConfigError(
                f"unknown instance_order {order!r}; valid choices: {', '.join(INSTANCE_ORDERS)}"
            )
        if len(instances) == 0:
            raise ConfigError("the instance set is empty")
        self.instances = instances
        self.order = order
        self.cursor = 0

    def __len__(self) -> int:
        return len(self.instances)

    def reseed(self, rng: np.random.Generator) -> None:
        """After the env is seeded: round-robin starts at an offset drawn from ``rng``."""
        if self.order == "round_robin":
            self.cursor = int(rng.integers(len(self.instances)))

    def next(self, rng: np.random.Generator) -> int:
        """The next instance seed (``random``: drawn from ``rng``)."""
        if self.order == "random":
            return int(self.instances[int(rng.integers(len(self.instances)))])
        seed = int(self.instances[self.cursor % len(self.instances)])
        self.cursor = (self.cursor + 1) % len(self.instances)
        return seed

    def state_dict(self) -> dict[str, Any]:
        """The cursor (JSON-friendly)."""
        return {"cursor": self.cursor, "order": self.order, "size": len(self.instances)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the cursor saved by ``state_dict`` (refuses another set's state)."""
        if int(state["size"]) != len(self.instances) or state["order"] != self.order:
            raise ValueError(
                f"instance state of a {state['order']} set of {state['size']} instances does not "
                f"fit this {self.order} set of {len(self.instances)}"
            )
        self.cursor = int(state["cursor"])


class BenchmarkCache:
    """Builds instance benchmarks, keeping the last few (data generation dominates a reset).

    Args:
        spec: Benchmark name and arguments.
        size: Instances kept.
        variation: Draw each instance's arguments with the benchmark's ``sample_variation`` from
            a generator seeded by the instance seed (the arguments in ``spec`` stay fixed).
    """

    def __init__(self, spec: MethodSpec, size: int = 2, variation: bool | str = False) -> None:
        self.spec = spec
        self.size = size
        self.variation = variation
        self._items: OrderedDict[int, Benchmark] = OrderedDict()
        self.seeded = instance_seeded(BENCHMARKS.get(spec.name), spec, variation)

    def kwargs_for(self, instance: int) -> dict[str, Any]:
        """Constructor arguments of the benchmark of ``instance`` (``instance_kwargs``)."""
        if not self.seeded:
            return dict(self.spec.kwargs)
        return instance_kwargs(BENCHMARKS[self.spec.name], self.spec, instance, self.variation)

    def spec_for(self, instance: int) -> MethodSpec:
        """The benchmark spec of ``instance`` (name and ``kwargs_for``), for plain trainer runs."""
        return MethodSpec(self.spec.name, self.kwargs_for(instance))

    def get(self, instance: int) -> Benchmark:
        """The benchmark of ``instance`` (data seeded by it when the benchmark takes a seed)."""
        key = int(instance) if self.seeded else 0
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        bench = make_benchmark(self.spec.name, **self.kwargs_for(key))
        self._items[key] = bench
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return bench


# Instance sets larger than this are checked on their first CHECK_LIMIT instances at build time
# (and every instance again at reset).
CHECK_LIMIT = 1024


def check_instance_set(
    benchmarks: BenchmarkCache, instances: Sequence[int], n_tasks: int, name: str
) -> None:
    """Refuse an instance set whose instances do not all have ``n_tasks`` tasks.

    Without ``variation`` every instance has the benchmark's arguments (only the seed differs), so
    T is the probe's. With it, T is read from each instance's sampled arguments (``n_tasks``;
    samplers that omit it keep the probe's T), without building any data. The feature table
    depends only on T and the env's feature settings, so equal T means equal feature tables.

    Raises:
        ConfigError: An instance with another T, naming it.
    """
    if not benchmarks.variation:
        return
    for seed in itertools.islice(instances, CHECK_LIMIT):
        got = benchmarks.kwargs_for(int(seed)).get("n_tasks", n_tasks)
        if int(got) != n_tasks:
            raise ConfigError(
                f"{name}: instance {seed} has {got} tasks but the set's first instance has "
                f"{n_tasks}; all instances of a set must share T and the feature table"
            )


def reset_options(options: Mapping[str, Any] | None, valid: tuple[str, ...]) -> dict[str, Any]:
    """``reset(options=...)`` as a dict, refusing keys other than ``valid``.

    ``instance`` (one seed) and ``instances`` (a list of seeds) must be non-negative integers: a
    float such as ``2.7`` is refused rather than truncated to another instance.

    Raises:
        ValueError: An unknown option, naming the valid ones, or a seed that is not a
            non-negative integer.
    """
    out = dict(options or {})
    unknown = [k for k in out if k not in valid]
    if unknown:
        raise ValueError(
            f"unknown reset option(s) {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(map(repr, valid))}"
        )
    if out.get("instance") is not None:
        out["instance"] = _seed(out["instance"], "options['instance']")
    if out.get("instances") is not None:
        seeds = out["instances"]
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__"):
            raise ValueError(f"options['instances'] must be a list of seeds, got {seeds!r}")
        out["instances"] = [_seed(x, f"options['instances'][{i}]") for i, x in enumerate(seeds)]
    return out


def _seed(value: Any, where: str) -> int:
    """``value`` as an instance seed: a non-negative integer (numpy integers accepted)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{where} must be a non-negative integer instance seed, got {value!r}")
    return int(value)


def jsonable(value: Any) -> Any:
    """A generator state (nested dicts with numpy integers) as plain JSON values."""
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, np.integer):
        return int(value)
    return value


__all__ = [
    "INSTANCE_ORDERS",
    "BenchmarkCache",
    "InstanceSampler",
    "InstanceSet",
    "check_instance_set",
    "jsonable",
    "overlap",
    "reset_options",
]
