"""Networks of Liu et al. (CVPR 2021): appearance encoder E_a, shape encoder E_s, decoder D, and
the squeeze/expand operators of Eq. 2-3 (spec §1; official code `network/scopsplus.py`).

Defaults follow the paper (layer3 stride 1 -> 32x32 maps from 128 px, §4.1); the released code uses
layer3 stride 2 (16x16) with a decoder of three upsamples. Channel 0 of the shape maps is background.

Initialisation: constructing the modules gives the code's initialisation (torchvision's kaiming on
the ResNet trunks, `network/resnet.py:161-166`; PyTorch defaults on the 1x1 head and the decoder), so
``init_weights(model, "code_kaiming")`` is only needed to undo another scheme. It may be called on
any module: convs inside a trunk get kaiming, every other conv/linear/BN is reset to PyTorch's
default. ``init_weights(model, "paper_normal")`` draws every conv/linear weight from N(0, 0.01)
(paper §4.1); draws use the global torch RNG, so seed it (``torch.manual_seed``) first.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

__all__ = ["resnet_trunk", "AppearanceEncoder", "ShapeEncoder", "Decoder", "squeeze", "expand",
           "add_coords", "init_weights", "count_parameters"]


class _Trunk(nn.Sequential):
    """Marker type: ``init_weights(..., "code_kaiming")`` applies kaiming only inside trunks."""


def _stage(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    # Same as torchvision's ResNet._make_layer (groups 1, no dilation): a 1x1 conv + BN shortcut
    # only where the first block changes resolution or width.
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride, down)]
    layers += [BasicBlock(out_ch, out_ch) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def resnet_trunk(blocks: tuple[int, int, int], width: int, layer3_stride: int) -> nn.Sequential:
    """Stem + layer1..3 of a BasicBlock ResNet, max-pool removed (`resnet.py:207` commented out),
    no layer4/avgpool/fc (spec §1, §5). Output stride 2*2*layer3_stride, 4*width channels.
    Keys equal torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so width 64, (3,4,6),
    stride 2 is resnet34's conv1/bn1/layer1-3 module for module, including its initialisation."""
    if len(blocks) != 3 or min(blocks) < 1 or width < 1 or layer3_stride not in (1, 2):
        raise ValueError(f"bad trunk: blocks={blocks} width={width} layer3_stride={layer3_stride}")
    trunk = _Trunk(OrderedDict([
        ("conv1", nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)),
        ("bn1", nn.BatchNorm2d(width)),
        ("relu", nn.ReLU(inplace=True)),
        ("layer1", _stage(width, width, blocks[0], 1)),
        ("layer2", _stage(width, 2 * width, blocks[1], 2)),
        # Paper §4.1: layer3 stride 1 (no dilation) for 32x32 maps; code `resnet.py:157-159`: 2.
        ("layer3", _stage(2 * width, 4 * width, blocks[2], layer3_stride)),
    ]))
    init_weights(trunk, "code_kaiming")  # torchvision's own init, as ResNet.__init__ does
    return trunk


class AppearanceEncoder(nn.Module):
    """E_a: ResNet-34-style trunk; x [B,3,H,W] in [0,1] (the code's Normalize(0, 1), spec §1)
    -> A [B, L, H/4 (stride 1) or H/8 (stride 2), W/...], L = out_channels = 4*width."""

    def __init__(self, blocks=(3, 4, 6), width: int = 64, layer3_stride: int = 1) -> None:
        super().__init__()
        self.trunk = resnet_trunk(tuple(blocks), width, layer3_stride)
        self.out_channels = 4 * width

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x)


class ShapeEncoder(nn.Module):
    """E_s: ResNet-18-style trunk + Conv1x1(4*width -> num_classes, bias) (`scopsplus.py:63-76`).
    ``num_classes`` = K+1 output channels (background included). Returns logits; softmax over
    dim 1 is the caller's (`scopsplus.py:117`)."""

    def __init__(self, num_classes: int, blocks=(2, 2, 2), width: int = 64, layer3_stride: int = 1) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes is K+1 >= 2 (background + parts), got {num_classes}")
        self.trunk = resnet_trunk(tuple(blocks), width, layer3_stride)
        self.head = nn.Conv2d(4 * width, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.trunk(x))


def _block(in_ch: int, out_ch: int, up: bool) -> nn.Sequential:
    # Convs keep their bias although BN follows: `Conv_Block_G` (`scopsplus.py:11-26`) does, and the
    # parameter count of spec §1 includes them.
    conv = (nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1) if up
            else nn.Conv2d(in_ch, out_ch, 3, padding=1))
    return nn.Sequential(conv, nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class Decoder(nn.Module):
    """D (`MyGenerator`, `scopsplus.py:29-61`): seven conv-BN-ReLU blocks of widths
    8h,8h,4h,4h,2h,2h,h and a final Conv3x3(h -> 3) with linear output (no tanh/sigmoid).
    Blocks 2, 4, 6 (1-based) are the upsampling candidates; the first ``upsamples`` of them are
    ConvTranspose2d(4, stride 2, pad 1). upsamples=2 is the paper's stride-1 variant ("2nd and 4th
    transposed", §4.1), 3 the code's stride-2 one (`downsamplelast` makes block 6 transposed)."""

    def __init__(self, in_channels: int, hidden: int = 32, upsamples: int = 2) -> None:
        super().__init__()
        if upsamples not in (1, 2, 3):
            raise ValueError(f"upsamples must be 1, 2 or 3, got {upsamples}")
        h = hidden
        widths = [8 * h, 8 * h, 4 * h, 4 * h, 2 * h, 2 * h, h]
        ups = {2 * i + 2 for i in range(upsamples)}  # 1-based block positions 2, 4, 6
        layers, c = [], in_channels
        for pos, w in enumerate(widths, start=1):
            layers.append(_block(c, w, pos in ups))
            c = w
        layers.append(nn.Conv2d(h, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.upsamples = upsamples

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def squeeze(probs: Tensor, feats: Tensor, eps: float = 1e-6) -> Tensor:
    """Eq. 2 (`scopsplus.py:118-120`, ``use_norm=True``): probs [B,K+1,h,w], feats [B,L,h,w] ->
    F [B,K+1,L], F_k = sum_p S_k(p) A(p) / (sum_p S_k(p) + eps), background included. The code has
    no eps; it keeps an empty part finite (spec §8.6) and changes F by a relative 1e-6/mass."""
    num = torch.einsum("bkhw,blhw->bkl", probs, feats)
    return num / (probs.sum(dim=(2, 3)).unsqueeze(-1) + eps)


def expand(probs: Tensor, part_feats: Tensor) -> Tensor:
    """Eq. 3 (`scopsplus.py:137-145`): probs [B,K+1,h,w], F [B,K+1,L] -> [B,L,h,w] = sum_k S_k(p) F_k.
    In training the probs come from the *other* view than F (cross reconstruction, Eq. 4)."""
    return torch.einsum("bkhw,bkl->blhw", probs, part_feats)


def add_coords(x: Tensor) -> Tensor:
    """[B,L,h,w] -> [B,L+2,h,w] = [x, ix, iy] (A.3; `scopsplus.py:130-139`): ix = linspace(0,1,w)
    varies along the width, iy = linspace(0,1,h) along the height."""
    b, _, h, w = x.shape
    ix = torch.linspace(0, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    iy = torch.linspace(0, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    return torch.cat([x, ix, iy], dim=1)


_SCHEMES = {"code_kaiming": "code_kaiming", "code": "code_kaiming",
            "paper_normal": "paper_normal", "paper_normal001": "paper_normal", "paper": "paper_normal"}
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)


def init_weights(module: nn.Module, scheme: str) -> None:
    """Re-initialise ``module`` in place (see the module docstring).

    "code_kaiming" (alias "code"): convs inside a trunk get kaiming_normal_(fan_out, relu), trunk BN
    (1, 0) (torchvision ResNet, `resnet.py:161-166`); all other conv/linear/BN layers are reset to
    PyTorch defaults (the code never re-initialises head or decoder, `modelwarper.py:20-29`).
    "paper_normal" (aliases "paper_normal001", "paper"): every conv/linear weight N(0, 0.01), biases 0,
    BN weight 1 bias 0 (paper §4.1). Parameters of other layer types (e.g. ArcFace W) are untouched.
    """
    if scheme not in _SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; expected one of {sorted(_SCHEMES)}")
    scheme = _SCHEMES[scheme]
    trunk_modules = {id(m) for t in module.modules() if isinstance(t, _Trunk) for m in t.modules()}
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, _WEIGHTED):
                if scheme == "paper_normal":
                    nn.init.normal_(m.weight, 0.0, 0.01)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif id(m) in trunk_modules:
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:  # trunk convs have none; kept for safety
                        nn.init.zeros_(m.bias)
                else:
                    m.reset_parameters()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.ones_(m.weight)  # PyTorch's BN default is also (1, 0): same for all schemes
                nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module) -> int:
    """Number of parameter elements (trainable or not; BN running stats are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())
