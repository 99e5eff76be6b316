"""Does torch's CPU kernel dispatch change a benchmark's training run (generalist log, run 11)?

Trains EW for a few hundred steps on one benchmark and prints a digest of the losses. Run it under
different ``ATEN_CPU_CAPABILITY`` values (``default``, ``avx2``, ``avx512`` where the CPU has it)
and compare the digests: equal digests mean the run does not depend on the SIMD kernels torch
picks; different ones mean a table computed on CPUs of different instruction sets is not bit for
bit (the runs are still valid draws).

    ATEN_CPU_CAPABILITY=default python docs/experiments/scripts/cpu_dispatch_check.py multi_digits
    ATEN_CPU_CAPABILITY=avx2 python docs/experiments/scripts/cpu_dispatch_check.py multi_digits
    ONEDNN_MAX_CPU_ISA=SSE41 python docs/experiments/scripts/cpu_dispatch_check.py multi_digits

``--no-mkldnn`` routes convolutions through ATen's own kernels instead of oneDNN's, which pick
their instruction set at run time independently of ``ATEN_CPU_CAPABILITY``.
"""

from __future__ import annotations

import argparse
import hashlib
import time

import torch

from mtl_backends.build import build_trainer
from mtl_backends.config import MethodSpec, TrainConfig

BENCHMARKS = {
    "multi_digits": MethodSpec("multi_digits", {"n_train": 2000, "n_val": 200, "n_test": 200}),
    "synthetic": MethodSpec("synthetic", {}),
}


def main() -> None:
    """Train, then print the capability torch used and a digest of every step's losses."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=sorted(BENCHMARKS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--no-mkldnn", action="store_true", help="convolutions through ATen, not oneDNN"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = not args.no_mkldnn
    train = TrainConfig(steps=args.steps, batch_size=64, lr=1e-3)
    trainer = build_trainer(
        BENCHMARKS[args.benchmark], MethodSpec("ew", {}), MethodSpec("sum", {}), train, 0
    )
    start = time.perf_counter()
    losses = torch.stack([trainer.step().losses for _ in range(args.steps)])
    seconds = time.perf_counter() - start
    digest = hashlib.sha256(losses.to(torch.float64).numpy().tobytes()).hexdigest()[:16]
    print(
        f"{args.benchmark}: capability {torch.backends.cpu.get_cpu_capability()}, "
        f"oneDNN {'off' if args.no_mkldnn else 'on'}, {args.steps} steps in {seconds:.1f} s, "
        f"last losses {losses[-1].tolist()}, digest {digest}"
    )


if __name__ == "__main__":
    main()
