"""GANSeg (He, Wandt, Rhodin, CVPR 2022) as a segbench method.

``fit``: train the hierarchical GAN on the images (``train.train_gan``), then a supervised
segmenter on image/mask pairs streamed from the frozen generator in eval mode (label = argmax
over [background, parts]; ``methods.common.segmenter``). ``predict`` runs that segmenter on
real images. Both stages run on ``ctx.device`` at the precision ``config.amp`` (fp32 by default;
``methods.common.precision``), data-parallel under torchrun, and keep resumable snapshots in
``ctx.checkpoint_dir("gan")`` and ``ctx.checkpoint_dir("segmenter")``.

For the latent-direction method: ``latent_dim``, ``sample_latent`` and
``generate_from_latent(z)``. The latent is ``[z_point | z_app | z_bg | n_u]`` (3 x noise_dim + 2,
all standard normal); the last two entries set the background centre u_bg = erf(n_u / sqrt 2),
uniform on (-1, 1)^2 (its vertical part ignored with ``generator.bg_shift=horizontal``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from segbench.benchmark.config import validate_config
from segbench.methods.base import PARTS, SAMPLES, Method
from segbench.methods.common.images import signed_to_uint8
from segbench.methods.common.pairs import FunctionPairSource
from segbench.methods.common.runtime import torch_threads
from segbench.methods.common.segmenter import build_segmenter, segment, train_segmenter
from segbench.methods.context import FitContext
from segbench.methods.ganseg.config import DATASET_PRESETS, PRESETS, RESUMABLE_FIELDS as GANSEG_RESUMABLE_FIELDS
from segbench.methods.ganseg.config import GANSegConfig
from segbench.methods.ganseg.generator import GANSegGenerator
from segbench.methods.ganseg.train import build_networks, train_gan


class GANSeg(Method):
    """Hierarchical point -> mask -> image GAN, then a segmenter trained on its pairs."""

    Config = GANSegConfig
    PRESETS = PRESETS
    DATASET_PRESETS = DATASET_PRESETS
    produces = frozenset({PARTS, SAMPLES})
    DATA_PARALLEL_BATCHES = ("batch_size", "segmenter.batch_size")  # split over torchrun processes
    RESUMABLE_FIELDS = GANSEG_RESUMABLE_FIELDS  # what ``run --resume DIR --set`` may change (config.py)

    def __init__(self, config: GANSegConfig | None = None) -> None:
        super().__init__(config)
        validate_config(self.config)  # every field's domain and the cross-field rules, as config_for
        self.generator: GANSegGenerator | None = None
        self.segmenter: torch.nn.Module | None = None
        self.fit_info: dict[str, Any] = {}

    # ----------------------------------------------------------------- training
    def fit(self, train_images, ctx: FitContext) -> None:
        with torch_threads(ctx.num_threads or self.config.num_threads):
            generator, gan_info = train_gan(self.config, train_images, ctx)
            self.generator = generator.eval()
            self.fit_info = {"gan": gan_info, "segmenter": self._fit_segmenter(ctx)}
        ctx.save_info(self.fit_info)

    def _fit_segmenter(self, ctx: FitContext) -> dict[str, Any]:
        """Stage 2: the segmenter on pairs streamed from the frozen generator (both on ctx.device)."""
        source = FunctionPairSource(self.num_parts + 1, self._pairs)
        self.generator.to(ctx.device)
        self.segmenter, seg_info = train_segmenter(self.config.segmenter, source, seed=ctx.seed, stats=ctx.stats,
                                                   progress=ctx.progress, checkpoint_dir=ctx.checkpoint_dir("segmenter"),
                                                   device=ctx.device, amp=self.config.amp)
        self.segmenter.cpu().eval()
        self.generator.cpu()
        return seg_info

    @classmethod
    def from_official_checkpoint(cls, path: Path, base_config: GANSegConfig, ctx: FitContext, *,
                                 segmenter: Path | None = None,
                                 parameters: Path | None = None) -> tuple["GANSeg", dict[str, Any]]:
        """The authors' released GAN (and segmenter) files as a fitted method (``importer``);
        without a segmenter file, stage 2 runs here with ``base_config.segmenter`` in ``ctx``."""
        from segbench.methods.ganseg.importer import import_official

        config, generator, seg_model, info = import_official(path, base_config, segmenter_path=segmenter,
                                                             parameters_path=parameters)
        method = cls(config)
        method.generator, method.segmenter = generator, seg_model
        if seg_model is None:
            with torch_threads(ctx.num_threads or config.num_threads):
                info["segmenter_trained_here"] = method._fit_segmenter(ctx)
        return method, info

    @torch.no_grad()
    def _pairs(self, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Generated images in [0,1] and labels argmax([background, parts]) from the frozen generator,
        left on the generator's device (the segmenter trains there: no round trip through the host)."""
        device = next(self.generator.parameters()).device
        z = self.generator.sample_latent(batch_size, rng).to(device)
        out = self.generator.eval()(z)
        images = ((out["images"] + 1) / 2).clamp(0, 1)
        return images, out["masks"].argmax(dim=1)

    # ----------------------------------------------------------------- inference
    def _require_fitted(self) -> None:
        if self.generator is None or self.segmenter is None:
            raise RuntimeError("GANSeg is not fitted: call fit() or load a checkpoint first")

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        with torch_threads(self.config.num_threads):
            return segment(self.segmenter, images, self.config.segmenter)

    def _sample(self, n: int, seed: int) -> torch.Tensor:
        self._require_fitted()
        z = self.sample_latent(n, torch.Generator().manual_seed(seed))
        with torch_threads(self.config.num_threads):
            images, _ = self.generate_from_latent(z)
        return signed_to_uint8(images)

    # ----------------------------------------------------------------- latent interface
    @property
    def latent_dim(self) -> int:
        return 3 * self.config.generator.noise_dim + 2

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n standard-normal latents [n, latent_dim] (CPU)."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def generate_from_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z [n, latent_dim] -> (images in [-1,1] [n,3,R,R], masks [n,K+1,R,R], channel 0
        background). Generator in eval mode; gradients flow to z unless the caller disables them."""
        self._require_fitted()
        out = self.generator.eval()(z.to(next(self.generator.parameters()).device))
        return out["images"], out["masks"]

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        self._require_fitted()
        state = {f"generator.{k}": v for k, v in self.generator.state_dict().items()}
        state.update({f"segmenter.{k}": v for k, v in self.segmenter.state_dict().items()})
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        generator, _ = build_networks(self.config, seed=0, discriminator=False)
        segmenter, _ = build_segmenter(self.config.segmenter, self.num_parts + 1, load_pretrained=False)

        def part(prefix: str) -> dict[str, Any]:
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}

        generator.load_state_dict(part("generator."))
        segmenter.load_state_dict(part("segmenter."))
        self.generator, self.segmenter = generator.eval(), segmenter.eval()
