"""Train the GANSeg GAN for a few steps and save both networks: one process, or a rank of a
torchrun group (tests/test_distributed.py compares the two).

    python tests/helpers/ddp_gan_worker.py OUT_DIR                       # one process, batch 8
    torchrun --nproc_per_node=2 tests/helpers/ddp_gan_worker.py OUT_DIR  # two ranks, 4 each

Two configurations of the smoke preset at global batch 8 on random images, ``STEPS`` steps
(gradient penalty and regularisers on every 2nd step): ``no_batchnorm`` (generator.batchnorm
false) and ``sync_batchnorm`` (the generator's BatchNorms synchronised over the ranks). Rank 0's
training snapshot ``OUT_DIR/<config>/checkpoints/training/gan/gan.pt`` holds both networks.
"""
from __future__ import annotations

import dataclasses
import sys

import torch

from segbench.benchmark.config import resolve_config
from segbench.methods.common.parallel import init_from_env, rank_seed, shutdown, world
from segbench.methods.context import FitContext
from segbench.methods.ganseg.config import PRESETS, GANSegConfig
from segbench.methods.ganseg.train import train_gan

STEPS = 6


class Images(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(index))


def main(out: str) -> None:
    torch.set_num_threads(1)
    init_from_env(torch.device("cpu"))
    torch.manual_seed(rank_seed(0))
    for name, batchnorm in (("no_batchnorm", "false"), ("sync_batchnorm", "true")):
        config = resolve_config(GANSegConfig, PRESETS, "smoke", {
            "steps": str(STEPS), "batch_size": "8", "gp_every": "2", "reg_every": "2", "log_every": "3",
            "checkpoint_every": "0", "generator.batchnorm": batchnorm})
        ctx = FitContext(seed=0, device="cpu", progress=False, run_dir=f"{out}/{name}" if world().main else None)
        train_gan(dataclasses.replace(config), Images(), ctx)
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
