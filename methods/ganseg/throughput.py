"""Measure GANSeg generator-training throughput and peak memory at a preset's widths.

    python -m segbench.methods.ganseg.throughput --preset paper --set batch_size=8 --steps 5
    python -m segbench.methods.ganseg.throughput --preset paper --device cuda --amp bf16 --steps 50
    python -m segbench.methods.ganseg.throughput --preset quick

Runs the real training loop (``train.train_gan``: one discriminator and one generator step per
iteration, gradient penalty and regularisers on their schedules) on random images for
``--warmup`` + ``--steps`` iterations, and prints one JSON line: seconds per iteration, it/s and
images/s over the timed steps, the amp mode, parameter counts, the process's peak resident memory
(ru_maxrss, which includes the Python interpreter and torch itself) and, on CUDA, the peak CUDA
allocation of the timed steps (``torch.cuda.max_memory_allocated``). A benchmark command, not a
test.

The helpers below (arguments, ``--amp``, the timing and memory fields, the one-line output) are
shared with ``methods.liu_parts.throughput`` and ``benchmark.gpu_check``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import sys
import time
from typing import Any, Callable

import torch

from segbench.benchmark.config import parse_set_args
from segbench.benchmark.errors import UserError
from segbench.methods.context import FitContext, resolve_device

AMP_CHOICES = ("off", "bf16", "fp16")


class RandomImages(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(index))


def random_pair_source(num_classes: int, size: int) -> Any:
    """Random images and labels at ``size``: the segmenter's cost without a generator in front."""
    from segbench.methods.common.pairs import FunctionPairSource

    def pairs(b: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.rand(b, 3, size, size, generator=g)
        return images, torch.randint(0, num_classes, (b, size, size), generator=g)

    return FunctionPairSource(num_classes, pairs)


# ----------------------------------------------------------------------------- shared helpers

def add_common_arguments(parser: argparse.ArgumentParser, *, steps: int, warmup: int) -> None:
    """The flags every throughput command takes."""
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed iterations (default {steps})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed iterations first (default {warmup})")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the config's / torch's)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--amp", default=None, choices=AMP_CHOICES,
                        help="mixed precision: sets the config's amp field (default: the preset's / --set's)")


def config_from_args(method_cls: type, args: argparse.Namespace, base: dict[str, str] | None = None) -> Any:
    """The method's config for ``--preset``, ``base`` then ``--set`` and ``--amp`` (which wins over
    ``--set amp=``); a config without an ``amp`` field refuses ``--amp bf16|fp16`` in one line."""
    overrides = {**(base or {}), **parse_set_args(args.set)}
    if args.amp is not None:
        has_amp = any(f.name == "amp" for f in dataclasses.fields(method_cls.Config))
        if has_amp:
            overrides["amp"] = args.amp
        elif args.amp != "off":
            raise UserError(f"--amp {args.amp}: {method_cls.Config.__name__} has no amp field yet (this method's "
                            "training has no mixed precision); use --amp off or leave --amp out")
    if args.steps < 1:
        raise UserError("--steps must be >= 1")
    if args.warmup < 0:
        raise UserError("--warmup must be >= 0")
    return method_cls.config_for(args.preset, overrides)


def amp_of(config: Any) -> str:
    """The config's amp mode (``off`` for a config that has no such field: fp32)."""
    return str(getattr(config, "amp", "off"))


def reset_peak_memory(device: torch.device) -> None:
    """Start a new CUDA peak (nothing on CPU: ru_maxrss cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def memory_fields(device: torch.device) -> dict[str, float]:
    """``peak_rss_mib``: the process's peak resident memory so far; ``peak_cuda_mib`` (CUDA only):
    the peak allocation since the last ``reset_peak_memory``."""
    row = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        row["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return row


def speed_fields(steps: int, seconds: float, batch_size: int, digits: int = 4) -> dict[str, float]:
    """Seconds per iteration, it/s and images/s of ``steps`` timed iterations of ``batch_size``."""
    return {"s_per_it": round(seconds / steps, digits), "it_s": round(steps / seconds, digits),
            "images_s": round(steps * batch_size / seconds, 2)}


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def run_command(args: argparse.Namespace, measure: Callable[[], dict[str, Any]]) -> int:
    """Set the threads, run ``measure`` and print its row as one JSON line (exit 0), or one
    ``error:`` line on stderr (exit 2) for a user error."""
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        row = measure()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(row))
    return 0


# ----------------------------------------------------------------------------- GANSeg

def measure(config, steps: int, warmup: int, device: str | torch.device = "auto") -> dict:
    from segbench.methods.ganseg.train import train_gan

    images = RandomImages(max(4 * config.batch_size, 64), config.image_size)
    ctx = FitContext(seed=0, device=resolve_device(device), progress=False)  # no run folder: nothing saved
    # Warm-up run: first-call allocations and kernel selection are not steady-state speed.
    if warmup:
        train_gan(dataclasses.replace(config, steps=warmup, log_every=max(warmup, 1)), images, ctx)
    timed = dataclasses.replace(config, steps=steps, log_every=steps)
    reset_peak_memory(ctx.device)
    t0 = time.perf_counter()
    _, info = train_gan(timed, images, ctx)
    wall = time.perf_counter() - t0
    return {"image_size": config.image_size, "batch_size": config.batch_size, "steps_timed": steps,
            "amp": amp_of(config), **speed_fields(steps, info["gan_seconds"], config.batch_size),
            "wall_s_incl_setup": round(wall, 2),
            "generator_params": info["generator_params"], "discriminator_params": info["discriminator_params"],
            **memory_fields(ctx.device), "torch_threads": torch.get_num_threads(), "device": info["device"],
            "device_name": device_name(ctx.device), "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    from segbench.methods.ganseg.method import GANSeg

    parser = argparse.ArgumentParser(prog="python -m segbench.methods.ganseg.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, steps=20, warmup=2)
    args = parser.parse_args(argv)

    def run() -> dict[str, Any]:
        config = config_from_args(GANSeg, args)
        if not args.threads and config.num_threads:
            torch.set_num_threads(config.num_threads)
        return {"preset": args.preset, "overrides": args.set,
                **measure(config, args.steps, args.warmup, args.device)}

    return run_command(args, run)


if __name__ == "__main__":
    sys.exit(main())
