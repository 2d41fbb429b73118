"""Measure liu_parts training throughput and peak memory at a preset's widths.

    python -m segbench.methods.liu_parts.throughput --preset paper --set perceptual.network=inception --steps 1
    python -m segbench.methods.liu_parts.throughput --preset quick
    python -m segbench.methods.liu_parts.throughput --preset paper --random-vgg --device cuda --amp bf16

Runs the real training step (``train.train_liu``: two TPS views, both cross reconstructions, every
loss) on random images for ``--warmup`` + ``--steps`` iterations and prints one JSON line: seconds
per iteration, it/s and images/s over the timed steps, the amp mode, parameter counts, the
perceptual network used, the process's peak resident memory (ru_maxrss: includes the interpreter
and torch) and, on CUDA, the timed steps' peak CUDA allocation. ``--amp`` sets the config's
``amp`` field (a config without one refuses ``bf16``/``fp16`` in one line). With
``--random-vgg`` the ``vgg19`` network gets random weights in a temporary torch cache, which
costs exactly what the ImageNet weights cost (the weights are not obtainable offline), so the
paper preset's speed can be measured without them. A benchmark command, not a test.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch

from segbench.methods.context import FitContext, resolve_device
from segbench.methods.ganseg.throughput import (RandomImages, add_common_arguments, amp_of, config_from_args,
                                                device_name, memory_fields, reset_peak_memory, run_command,
                                                speed_fields)


@contextlib.contextmanager
def random_vgg19_cache() -> Iterator[Path]:
    """A temporary torch hub folder holding a randomly initialised VGG-19 under the ImageNet file's name."""
    from torchvision.models import vgg19

    from segbench.methods.liu_parts.perceptual import VGG19_FILE

    before = torch.hub.get_dir()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "checkpoints").mkdir()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            torch.save(vgg19(weights=None).state_dict(), Path(tmp) / "checkpoints" / VGG19_FILE)
        torch.hub.set_dir(tmp)
        try:
            yield Path(tmp)
        finally:
            torch.hub.set_dir(before)


def measure(config, steps: int, warmup: int, device: str = "auto") -> dict:
    from segbench.methods.liu_parts.train import train_liu

    images = RandomImages(max(2 * config.batch_size, 8), config.image_size)
    ctx = FitContext(seed=0, device=resolve_device(device), progress=False)  # no run folder: nothing saved
    if warmup:  # first-call allocations and kernel selection are not steady-state speed
        train_liu(dataclasses.replace(config, steps=warmup, log_every=warmup, figure_count=0), images, ctx)
    reset_peak_memory(ctx.device)
    t0 = time.perf_counter()
    _, _, info = train_liu(dataclasses.replace(config, steps=steps, log_every=steps, figure_count=0), images, ctx)
    wall = time.perf_counter() - t0
    return {"image_size": config.image_size, "batch_size": config.batch_size, "steps_timed": steps,
            "amp": amp_of(config), **speed_fields(steps, info["seconds"], config.batch_size, digits=3),
            "wall_s_incl_setup": round(wall, 2),
            "perceptual": info["perceptual"], "parameters": info["parameters"],
            "native_map_size": info["native_map_size"], **memory_fields(ctx.device),
            "torch_threads": torch.get_num_threads(), "device": info["device"],
            "device_name": device_name(ctx.device), "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    from segbench.methods.liu_parts.method import LiuParts

    parser = argparse.ArgumentParser(prog="python -m segbench.methods.liu_parts.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, steps=5, warmup=1)
    parser.add_argument("--random-vgg", action="store_true",
                        help="vgg19 with random weights (same cost as ImageNet's, which are not obtainable here)")
    args = parser.parse_args(argv)

    def run() -> dict:
        config = config_from_args(LiuParts, args, base={"num_parts": "8"})
        if not args.threads and config.num_threads:
            torch.set_num_threads(config.num_threads)
        with random_vgg19_cache() if args.random_vgg else contextlib.nullcontext():
            return {"preset": args.preset, "overrides": args.set, "random_vgg": args.random_vgg,
                    **measure(config, args.steps, args.warmup, args.device)}

    return run_command(args, run)


if __name__ == "__main__":
    sys.exit(main())
