"""Liu, Zhang, Zhang, Ma, Wang, CVPR 2021 ("Unsupervised Part Segmentation through Disentangling
Appearance and Shape") as a segbench method.

``fit``: the appearance encoder E_a, shape encoder E_s, decoder D and ArcFace classifier trained
by cross reconstruction of TPS-warped pairs with the concentration, background and part
classification losses (``train.train_liu``, one stage ``liu`` with resumable snapshots).
``predict``: images resized to ``image_size`` (antialiased bilinear), E_s in eval mode, softmax over
the K+1 channels (channel 0 = background) and the probabilities upsampled bilinearly to the input
size (align_corners=False keeps a distribution; ``predict_upsample=nearest`` repeats pixels
instead). ``native_map_size`` is the side of E_s's map
(32 at 128 px with the paper's layer3 stride 1, 16 with the code's 2): the ``liu`` landmark
regression variant takes its soft-argmax on a map of that side, as Liu et al. did.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from segbench.benchmark.config import validate_config
from segbench.methods.base import PARTS, Method
from segbench.methods.common.images import resize_square
from segbench.methods.common.runtime import torch_threads
from segbench.methods.context import FitContext
from segbench.methods.liu_parts.config import DATASET_PRESETS, PRESETS, RESUMABLE_FIELDS as LIU_RESUMABLE_FIELDS
from segbench.methods.liu_parts.config import LiuPartsConfig, native_map_size
from segbench.methods.liu_parts.train import NETWORKS, build_networks, part_probs, train_liu


class LiuParts(Method):
    """Appearance/shape disentangling part segmenter (K parts + background)."""

    Config = LiuPartsConfig
    PRESETS = PRESETS
    DATASET_PRESETS = DATASET_PRESETS
    produces = frozenset({PARTS})  # no sampler: the decoder needs a real image's appearance
    DATA_PARALLEL_BATCHES = ("batch_size",)  # split over torchrun processes
    RESUMABLE_FIELDS = LIU_RESUMABLE_FIELDS  # what ``run --resume DIR --set`` may change (config.py)

    def __init__(self, config: LiuPartsConfig | None = None) -> None:
        super().__init__(config)
        validate_config(self.config)  # every field's domain and the cross-field rules, as config_for
        self.nets: dict[str, torch.nn.Module] | None = None
        self.fit_info: dict[str, Any] = {}

    @property
    def native_map_size(self) -> int:
        """Side of the part map E_s emits at ``image_size`` (image_size / 4 or / 8)."""
        return native_map_size(self.config)

    # ----------------------------------------------------------------- training
    def fit(self, train_images, ctx: FitContext) -> None:
        with torch_threads(ctx.num_threads or self.config.num_threads):
            nets, _, info = train_liu(self.config, train_images, ctx)
        self.nets = {name: net.cpu().eval() for name, net in nets.items()}
        self.fit_info = info
        ctx.save_info(info)

    # ----------------------------------------------------------------- inference
    def _require_fitted(self) -> None:
        if self.nets is None:
            raise RuntimeError("LiuParts is not fitted: call fit() or load a checkpoint first")

    def _predict(self, images: torch.Tensor) -> torch.Tensor:
        self._require_fitted()
        shape = self.nets["shape"].eval()
        device = next(shape.parameters()).device
        with torch_threads(self.config.num_threads), torch.no_grad():
            x = resize_square(images.to(device), self.config.image_size)
            probs = part_probs(shape, x)
            if self.config.predict_upsample == "nearest":
                probs = F.interpolate(probs, size=images.shape[-2:], mode="nearest")
            else:
                probs = F.interpolate(probs, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return probs.cpu()

    # ----------------------------------------------------------------- persistence
    def state_dict(self) -> dict[str, Any]:
        """Every network's tensors (E_s + head suffice to predict; E_a, D and ArcFace's W are kept
        for inspection and transfer), keyed ``<network>.<parameter>``."""
        self._require_fitted()
        return {f"{name}.{k}": v.detach().cpu() for name in NETWORKS for k, v in self.nets[name].state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        nets = build_networks(self.config, seed=0)
        for name in NETWORKS:
            prefix = f"{name}."
            nets[name].load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        extra = sorted(k for k in state if k.split(".", 1)[0] not in NETWORKS)
        if extra:
            raise ValueError(f"unexpected keys {extra[:5]}")
        self.nets = {name: net.eval() for name, net in nets.items()}
