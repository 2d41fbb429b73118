"""Liu et al.'s reconstruction loss L_rec: a masked, adaptively weighted perceptual loss
(spec §2.2 and the §5 table; paper Eq. 5, A.2; code ``loss/perceptualloss.py``).

Per layer ``i`` of a frozen feature network ``f`` (the input itself counts as layer 0):
``l_i = mean_{B,C,H,W} m_i * (f_i(x) - f_i(x_hat))^2`` with ``m`` the TPS validity mask (mean over
its channels) average-pooled to the layer's size. The per-layer weights ``w_i`` start at fixed
values and are reset to ``1 / (running mean of l_i + 1e-6)`` every ``refresh_every`` calls (the
meter is fed on every call, as in the code, so twice per training iteration). Two forms:

* ``"paper"`` (A.2): ``P = sum_i w_i l_i``;
* ``"code"`` (``PerceptualNewLoss``): ``P = sum_i w_i l_i * (sum_j l_j) / n_layers``; the extra
  factor carries gradient.

Networks (the first is the paper's; the others are offline stand-ins, recorded by
:meth:`PerceptualLoss.describe`):

* ``"vgg19"``: torchvision's VGG-19 with the ImageNet file
  ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth`` (never downloaded); ImageNet-normalised
  input; layers input, relu1_2, relu2_2, relu3_2, relu4_2, relu5_2 (``features[0:4]``, ``[4:9]``,
  ``[9:14]``, ``[14:23]``, ``[23:32]``); initial weights ``[1/0.25, 1/0.26, 1/1.4, 1/3.19,
  1/2.54, 1/0.3]``.
* ``"inception"``: the offline TF-Inception (2015-12-05) of :mod:`segbench.feature_nets` (the
  ``fid`` extra), its early blocks run directly on ``2x - 1`` (no 299-px resize); layers input
  (``2x - 1``), Conv2d_2b_3x3, Conv2d_4a_3x3, Mixed_5d, Mixed_6e, keeping only those whose
  feature map is at least 4x4 at ``image_size`` (64 px: input, Conv2d_2b, Conv2d_4a, Mixed_5d);
  initial weights 1.
* ``"pixel"``: the image itself (``pixel_levels=1``) or an average-pool pyramid of it
  (``pixel_levels > 1``: the image, 2x2-pooled, 4x4-pooled, ...); initial weights 1.

The frozen network is not part of the module tree (it is not in ``state_dict``, ``.to()``,
``.train()`` or ``.parameters()``); a copy is made lazily for each device the inputs live on.
The module's state is only the buffers ``layer_weights``, ``meter_sum``, ``meter_count`` and
``refreshes``, so a training snapshot stays small and a resumed run continues exactly. In a
data-parallel run (``methods.common.parallel``) the meter is fed the mean of the ranks' ``l_i``
(the global batch's, as the ranks' batches are equal slices), so every rank keeps the same weights.
"""
from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from segbench.benchmark.errors import DataNotFoundError, UserError, one_line
from segbench.methods.common.parallel import world

NETWORKS = ("vgg19", "inception", "pixel")
FORMS = ("paper", "code")

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_LAYERS = ("input", "relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")
VGG19_SLICES = ((0, 4), (4, 9), (9, 14), (14, 23), (23, 32))
VGG19_INITIAL_WEIGHTS = (1 / 0.25, 1 / 0.26, 1 / 1.4, 1 / 3.19, 1 / 2.54, 1 / 0.3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Inception layers after "input": (name, torch-fidelity blocks run to reach it from the previous one)
INCEPTION_STAGES = (
    ("Conv2d_2b_3x3", ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3")),
    ("Conv2d_4a_3x3", ("MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3")),
    ("Mixed_5d", ("MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d")),
    ("Mixed_6e", ("Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e")),
)
INCEPTION_MIN_SIDE = 4  # a layer whose map is smaller than 4x4 is left out

SUGGESTION = "or use --set perceptual.network=inception|pixel"


# ----------------------------------------------------------------------------- feature networks

class _PixelPyramid(nn.Module):
    """The image (in [0, 1]) and ``levels - 1`` successive 2x2 average poolings of it."""

    def __init__(self, levels: int):
        super().__init__()
        self.levels = int(levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [x]
        for _ in range(self.levels - 1):
            x = F.avg_pool2d(x, 2)
            feats.append(x)
        return feats


class _VGG19Features(nn.Module):
    """ImageNet-normalised input and VGG-19 relu1_2 ... relu5_2."""

    def __init__(self, features: nn.Sequential):
        super().__init__()
        self.stages = nn.ModuleList(features[a:b] for a, b in VGG19_SLICES)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


class _InceptionFeatures(nn.Module):
    """``2x - 1`` and the selected TF-Inception stages (eval-mode BatchNorm)."""

    def __init__(self, extractor: nn.Module, num_stages: int):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(*(getattr(extractor, block) for block in blocks))
            for _, blocks in INCEPTION_STAGES[:num_stages]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = 2.0 * x - 1.0
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def vgg19_weights_path() -> Path:
    """Where the ImageNet VGG-19 file must be: ``torch.hub.get_dir()/checkpoints/vgg19-dcbb9e9d.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE


def inception_layer_sides(image_size: int) -> list[int]:
    """Spatial side of Conv2d_2b, Conv2d_4a, Mixed_5d, Mixed_6e for a square input (valid convs)."""
    s = int(image_size)
    conv1a = (s - 3) // 2 + 1
    conv2b = conv1a - 2  # 2a is valid, 2b padded
    conv4a = ((conv2b - 3) // 2 + 1) - 2  # max-pool 3/2, 3b 1x1, 4a valid
    mixed5d = (conv4a - 3) // 2 + 1  # max-pool 3/2, Mixed_5b..d keep the size
    mixed6e = (mixed5d - 3) // 2 + 1  # Mixed_6a stride 2 valid
    return [conv2b, conv4a, mixed5d, mixed6e]


def inception_layers(image_size: int) -> list[str]:
    """The Inception layers used at ``image_size``: input and every stage with a map >= 4x4."""
    names = ["input"]
    for (name, _), side in zip(INCEPTION_STAGES, inception_layer_sides(image_size)):
        if side < INCEPTION_MIN_SIDE:
            break
        names.append(name)
    return names


_BASE_NETS: dict[tuple, nn.Module] = {}  # frozen CPU networks, shared by every PerceptualLoss


def _freeze(net: nn.Module) -> nn.Module:
    net.requires_grad_(False)
    return net.eval()


def _load_vgg19() -> tuple[nn.Module, Path]:
    path = vgg19_weights_path()
    if not path.is_file():
        raise UserError(f"perceptual.network=vgg19 needs the ImageNet VGG-19 weights file {path} (torchvision's "
                        f"{VGG19_FILE}; nothing is downloaded): copy it there, {SUGGESTION}")
    st = path.stat()
    key = ("vgg19", str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _BASE_NETS:
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["E"], batch_norm=False)  # == torchvision vgg19(weights=None).features
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            features.load_state_dict(state, strict=True)
        except Exception as exc:  # a corrupt or foreign file is the user's to fix
            raise UserError(f"{path} is not a torchvision VGG-19 state dict ({type(exc).__name__}: "
                            f"{one_line(exc)[:200]}); replace it, {SUGGESTION}") from exc
        _BASE_NETS[key] = _freeze(_VGG19Features(features))
    return _BASE_NETS[key], path


def _load_inception(num_stages: int) -> tuple[nn.Module, Path]:
    try:
        from segbench.feature_nets import _extractor_class, locate_inception_weights

        path = locate_inception_weights()
        key = ("inception", str(path.resolve()), num_stages)
        if key not in _BASE_NETS:
            extractor = _extractor_class()("inception-v3-compat-offline", ["2048"],
                                           feature_extractor_weights_path=str(path))
            _BASE_NETS[key] = _freeze(_InceptionFeatures(extractor, num_stages))
    except (DataNotFoundError, ImportError) as exc:
        raise UserError(f"perceptual.network=inception: {one_line(exc)}; "
                        f"or use --set perceptual.network=pixel") from exc
    return _BASE_NETS[key], path


# ----------------------------------------------------------------------------- the loss

def _mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over the ranks of a data-parallel run (itself in one process)."""
    size = world().size
    if size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / size


class PerceptualLoss(nn.Module):
    """Masked perceptual loss with adaptive per-layer weights (see the module docstring)."""

    def __init__(self, network: str = "vgg19", form: str = "paper", refresh_every: int = 99,
                 image_size: int = 128, pixel_levels: int = 1):
        super().__init__()
        if network not in NETWORKS:
            raise UserError(f"perceptual.network={network!r}: must be one of {', '.join(NETWORKS)}")
        if form not in FORMS:
            raise UserError(f"perceptual.form={form!r}: must be 'paper' or 'code'")
        if int(refresh_every) < 0:
            raise UserError(f"perceptual.refresh_every={refresh_every}: must be >= 0 (0 = never refresh)")
        if int(pixel_levels) < 1:
            raise UserError(f"perceptual.pixel_levels={pixel_levels}: must be >= 1")
        self.network = network
        self.form = form
        self.refresh_every = int(refresh_every)
        self.image_size = int(image_size)
        if network == "vgg19":
            base, path = _load_vgg19()
            self.layers = list(VGG19_LAYERS)
            self.weights_source = f"imagenet:{path}"
            initial = list(VGG19_INITIAL_WEIGHTS)
        elif network == "inception":
            self.layers = inception_layers(self.image_size)
            if len(self.layers) < 2:
                raise UserError(f"perceptual.network=inception: image_size={self.image_size} is too small for "
                                f"any Inception layer (a {INCEPTION_MIN_SIDE}x{INCEPTION_MIN_SIDE} Conv2d_2b map "
                                f"needs >= 13 px); use --set perceptual.network=pixel")
            base, path = _load_inception(len(self.layers) - 1)
            self.weights_source = f"tf_inception:{path}"
            initial = [1.0] * len(self.layers)
        else:
            base = _PixelPyramid(int(pixel_levels))
            self.layers = ["input"] + [f"avgpool{2 ** i}" for i in range(1, int(pixel_levels))]
            self.weights_source = "none"
            initial = [1.0] * len(self.layers)
        # Plain dict: the frozen network stays out of the module tree (and of state_dict).
        self._nets: dict[str, nn.Module] = {"cpu": base}
        n = len(self.layers)
        self.register_buffer("layer_weights", torch.tensor(initial, dtype=torch.float32))
        self.register_buffer("meter_sum", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("meter_count", torch.zeros((), dtype=torch.long))
        self.register_buffer("refreshes", torch.zeros((), dtype=torch.long))
        self._count: int | None = None  # host copy of meter_count (no device sync per call)
        self.register_load_state_dict_post_hook(PerceptualLoss._after_load)

    @staticmethod
    def _after_load(module: "PerceptualLoss", incompatible_keys) -> None:
        module._count = None

    def extra_repr(self) -> str:
        return f"network={self.network}, form={self.form}, refresh_every={self.refresh_every}, layers={self.layers}"

    def describe(self) -> dict:
        """What was used, for the run record: network, weights file and layers."""
        return {"network": self.network, "weights": self.weights_source, "layers": list(self.layers)}

    def _net_for(self, device: torch.device) -> nn.Module:
        key = str(device)
        if key not in self._nets:
            self._nets[key] = _freeze(copy.deepcopy(self._nets["cpu"]).to(device))
        return self._nets[key]

    def layer_losses(self, x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[n_layers]`` masked squared feature differences ``l_i`` (x, x_hat in [0, 1])."""
        if x.shape != x_hat.shape or x.dim() != 4:
            raise ValueError(f"x and x_hat must be [B, C, H, W] of one shape, got {tuple(x.shape)} and "
                             f"{tuple(x_hat.shape)}")
        net = self._net_for(x_hat.device)
        dtype = next((p.dtype for p in net.parameters()), None)
        if dtype is not None:  # a network with weights runs in its own precision
            x, x_hat = x.to(dtype), x_hat.to(dtype)
        if x.requires_grad:
            target = net(x)
        else:
            with torch.no_grad():
                target = net(x)
        pred = net(x_hat)
        m = mask.to(device=x_hat.device, dtype=x_hat.dtype)
        if m.dim() == 3:
            m = m.unsqueeze(1)
        m = m.mean(dim=1, keepdim=True)
        losses = []
        for a, b in zip(target, pred):
            mi = m if m.shape[-2:] == a.shape[-2:] else F.adaptive_avg_pool2d(m, a.shape[-2:])
            losses.append((mi * (a - b) ** 2).mean())
        return torch.stack(losses)

    def forward(self, x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor,
                update_meter: bool = True) -> torch.Tensor:
        """P(x, x_hat) with the current weights; then the meter is fed (``update_meter``) and the
        weights are refreshed when it holds ``refresh_every`` entries (used from the next call)."""
        losses = self.layer_losses(x, x_hat, mask)
        weights = self.layer_weights.detach().clone().to(losses.dtype)  # refreshed below, in place
        total = (weights * losses).sum()
        if self.form == "code":
            total = total * losses.sum() / len(self.layers)
        if update_meter:
            self._feed(_mean_over_ranks(losses.detach()))
        return total

    @torch.no_grad()
    def _feed(self, losses: torch.Tensor) -> None:
        if self._count is None:
            self._count = int(self.meter_count)
        self.meter_sum += losses.to(self.meter_sum.dtype)
        self.meter_count += 1
        self._count += 1
        if self.refresh_every and self._count >= self.refresh_every:
            mean = self.meter_sum / self.meter_count
            self.layer_weights.copy_((1.0 / (mean + 1e-6)).to(self.layer_weights.dtype))
            self.meter_sum.zero_()
            self.meter_count.zero_()
            self._count = 0
            self.refreshes += 1
