"""Measure GANSeg generator-training throughput and peak memory at a preset's widths.

    python -m methods.ganseg.throughput --preset paper --set batch_size=8 --steps 5
    python -m methods.ganseg.throughput --preset quick

Runs the real training loop (``train.train_gan``: one discriminator and one generator step per
iteration, gradient penalty and regularisers on their schedules) on random images for
``--warmup`` + ``--steps`` iterations, and prints one JSON line: seconds per iteration and it/s
over the timed steps, parameter counts, and the process's peak resident memory (ru_maxrss,
which includes the Python interpreter and torch itself). A benchmark command, not a test.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time

import torch

from segbench.benchmark.config import parse_set_args
from segbench.benchmark.errors import UserError
from segbench.methods.context import FitContext, resolve_device


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(index))


def measure(config, steps: int, warmup: int, device: str = "auto") -> dict:
    from segbench.methods.ganseg.train import train_gan

    images = RandomImages(max(4 * config.batch_size, 64), config.image_size)
    ctx = FitContext(seed=0, device=resolve_device(device), progress=False)  # no run folder: nothing saved
    # Warm-up run: first-call allocations and kernel selection are not steady-state speed.
    if warmup:
        train_gan(dataclasses.replace(config, steps=warmup, log_every=max(warmup, 1)), images, ctx)
    timed = dataclasses.replace(config, steps=steps, log_every=steps)
    t0 = time.perf_counter()
    _, info = train_gan(timed, images, ctx)
    wall = time.perf_counter() - t0
    return {"image_size": config.image_size, "batch_size": config.batch_size, "steps_timed": steps,
            "s_per_it": round(info["gan_seconds"] / steps, 4), "it_s": round(steps / info["gan_seconds"], 4),
            "wall_s_incl_setup": round(wall, 2),
            "generator_params": info["generator_params"], "discriminator_params": info["discriminator_params"],
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "torch_threads": torch.get_num_threads(), "device": info["device"],
            "cpu": platform.processor() or platform.machine()}


def main(argv: list[str] | None = None) -> int:
    from segbench.methods.ganseg.method import GANSeg

    parser = argparse.ArgumentParser(prog="python -m methods.ganseg.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the config's / torch's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    args = parser.parse_args(argv)
    try:
        config = GANSeg.config_for(args.preset, parse_set_args(args.set))
        threads = args.threads or config.num_threads
        if threads:
            torch.set_num_threads(threads)
        if args.steps < 1:
            raise UserError("--steps must be >= 1")
        row = {"preset": args.preset, "overrides": args.set, **measure(config, args.steps, args.warmup, args.device)}
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
