"""liu_parts networks: parameter counts of spec §1, torchvision equivalence of the trunk, output
shapes of the paper / code / quick variants, squeeze-expand (Eq. 2-3) on hand-made maps,
coordinate channels (A.3) and the two initialisation schemes."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision

from segbench.methods.liu_parts.networks import (AppearanceEncoder, Decoder, ShapeEncoder, add_coords,
                                                 count_parameters, expand, init_weights, resnet_trunk, squeeze)

pytestmark = pytest.mark.usefixtures("one_thread")

# Exact counts at the paper's widths. Spec §1 gives "E_a 8.17 M, E_s 2.78 M, D 2.36 M": all three
# are these integers truncated to two decimals. D's 2.36 M is the code's stride-2 decoder (three
# transposed convs); the paper's stride-1 decoder has 2,332,739. E_s with its 9-channel head is
# 2,785,097 (2.79 M rounded); its trunk alone is 2,782,784.
E_A, E_S, E_S_TRUNK, D_CODE, D_PAPER = 8_170_304, 2_785_097, 2_782_784, 2_361_411, 2_332_739


def _trunc2(n: int) -> float:
    return math.floor(n / 1e4) / 100


def test_parameter_counts_match_spec():
    assert count_parameters(AppearanceEncoder((3, 4, 6), 64, 1)) == E_A
    e_s = ShapeEncoder(9, (2, 2, 2), 64, 1)
    assert count_parameters(e_s) == E_S and count_parameters(e_s.trunk) == E_S_TRUNK
    assert count_parameters(Decoder(258, 32, upsamples=3)) == D_CODE
    assert count_parameters(Decoder(258, 32, upsamples=2)) == D_PAPER
    assert (_trunc2(E_A), _trunc2(E_S), _trunc2(D_CODE)) == (8.17, 2.78, 2.36)
    assert round(E_A / 1e6, 2) == 8.17 and round(D_CODE / 1e6, 2) == 2.36 and round(E_S_TRUNK / 1e6, 2) == 2.78
    # layer3 stride changes no parameter count
    assert count_parameters(AppearanceEncoder(layer3_stride=2)) == E_A


@pytest.mark.parametrize("arch,blocks", [("resnet34", (3, 4, 6)), ("resnet18", (2, 2, 2))])
def test_trunk_matches_torchvision(arch, blocks):
    ref = getattr(torchvision.models, arch)(weights=None)
    keep = ("conv1", "bn1", "layer1", "layer2", "layer3")
    want = {k: v.shape for k, v in ref.state_dict().items() if k.split(".")[0] in keep}
    trunk = resnet_trunk(blocks, 64, 2)
    assert {k: v.shape for k, v in trunk.state_dict().items()} == want
    # the stock strides (stride-2 layer3 = the code's variant) and no max-pool
    assert trunk.layer3[0].conv1.stride == (2, 2) and trunk.layer3[0].downsample[0].stride == (2, 2)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in trunk.modules())
    # loading torchvision's weights into the trunk reproduces its features
    trunk.load_state_dict({k: v for k, v in ref.state_dict().items() if k.split(".")[0] in keep})
    trunk.eval(), ref.eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y = ref.layer3(ref.layer2(ref.layer1(ref.relu(ref.bn1(ref.conv1(x))))))
        torch.testing.assert_close(trunk(x), y)


@pytest.mark.parametrize("stride,side,ups", [(1, 32, 2), (2, 16, 3)])
def test_shapes_at_paper_widths(stride, side, ups):
    # meta tensors: shapes without arithmetic, so the full-width networks cost nothing
    with torch.device("meta"):
        e_a, e_s = AppearanceEncoder(layer3_stride=stride), ShapeEncoder(9, layer3_stride=stride)
        x = torch.empty(2, 3, 128, 128)
        a, s = e_a(x), e_s(x)
        assert a.shape == (2, 256, side, side) and s.shape == (2, 9, side, side)
        f = squeeze(s.softmax(1), a)
        assert f.shape == (2, 9, 256)
        code = add_coords(expand(s.softmax(1), f))
        assert code.shape == (2, 258, side, side)
        assert Decoder(e_a.out_channels + 2, 32, ups)(code).shape == (2, 3, 128, 128)


def test_quick_preset_shapes_real_forward():
    torch.manual_seed(0)
    e_a = AppearanceEncoder((1, 1, 1), 32, 1)
    e_s = ShapeEncoder(5, (1, 1, 1), 32, 1)
    dec = Decoder(e_a.out_channels + 2, 8, 2)
    x = torch.rand(2, 3, 64, 64)
    a, logits = e_a(x), e_s(x)
    assert e_a.out_channels == 128 and a.shape == (2, 128, 16, 16) and logits.shape == (2, 5, 16, 16)
    out = dec(add_coords(expand(logits.softmax(1), squeeze(logits.softmax(1), a))))
    assert out.shape == (2, 3, 64, 64) and torch.isfinite(out).all()
    out.mean().backward()
    assert all(p.grad is not None for p in list(e_a.parameters()) + list(e_s.parameters()))


def test_decoder_upsample_layout():
    kinds = lambda d: [type(b[0]).__name__ for b in d.net[:7]]  # noqa: E731
    assert kinds(Decoder(10, 4, 2)) == ["Conv2d", "ConvTranspose2d", "Conv2d", "ConvTranspose2d",
                                        "Conv2d", "Conv2d", "Conv2d"]
    assert kinds(Decoder(10, 4, 3))[5] == "ConvTranspose2d"
    assert [m.out_channels for m in Decoder(10, 4, 2).net if isinstance(m, torch.nn.Conv2d)][-1] == 3
    assert Decoder(10, 4, 1)(torch.rand(2, 10, 5, 6)).shape == (2, 3, 10, 12)
    with pytest.raises(ValueError):
        Decoder(10, 4, 4)


def test_squeeze_expand_hard_regions():
    # 2x2 map: background (k=0) on the left column, part 1 on the right column; features are
    # constant per region (2 channels), so F = region means and expand reconstructs the map.
    probs = torch.tensor([[[1., 0.], [1., 0.]], [[0., 1.], [0., 1.]]]).unsqueeze(0)  # [1,2,2,2]
    feats = torch.tensor([[[3., 7.], [3., 7.]], [[-1., 5.], [-1., 5.]]]).unsqueeze(0)  # [1,2,2,2]
    f = squeeze(probs, feats, eps=0.0)
    torch.testing.assert_close(f, torch.tensor([[[3., -1.], [7., 5.]]]))
    torch.testing.assert_close(expand(probs, f), feats)
    # the default eps only shrinks F by mass/(mass + eps)
    torch.testing.assert_close(squeeze(probs, feats), f * 2 / (2 + 1e-6))


def test_squeeze_expand_soft_by_hand():
    # one channel, 1x2 map: A = (2, 4); S_0 = (0.75, 0.25), S_1 = (0.25, 0.75)
    probs = torch.tensor([[[[0.75, 0.25]], [[0.25, 0.75]]]])
    feats = torch.tensor([[[[2.0, 4.0]]]])
    f = squeeze(probs, feats, eps=0.0)
    # F_0 = (0.75*2 + 0.25*4) / 1 = 2.5 ; F_1 = (0.25*2 + 0.75*4) / 1 = 3.5
    torch.testing.assert_close(f, torch.tensor([[[2.5], [3.5]]]))
    # expand: p0 = 0.75*2.5 + 0.25*3.5 = 2.75 ; p1 = 0.25*2.5 + 0.75*3.5 = 3.25
    torch.testing.assert_close(expand(probs, f), torch.tensor([[[[2.75, 3.25]]]]))
    # an empty part stays finite thanks to eps
    assert torch.isfinite(squeeze(torch.cat([probs, torch.zeros(1, 1, 1, 2)], 1), feats)).all()


def test_add_coords_order_and_values():
    x = torch.full((2, 3, 3, 5), 9.0)
    y = add_coords(x)
    assert y.shape == (2, 5, 3, 5)
    torch.testing.assert_close(y[:, :3], x)
    ix, iy = y[:, 3], y[:, 4]
    torch.testing.assert_close(ix[1, 2], torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))  # along the width
    torch.testing.assert_close(iy[0, :, 4], torch.tensor([0.0, 0.5, 1.0]))  # along the height
    assert (ix == ix[:, :1]).all() and (iy == iy[:, :, :1]).all()


def test_init_schemes():
    torch.manual_seed(0)
    e_s = ShapeEncoder(9, (1, 1, 1), 64, 1)
    dec = Decoder(258, 16, 2)
    model = torch.nn.ModuleDict({"e_s": e_s, "dec": dec})
    w = e_s.trunk.layer1[0].conv1.weight  # 64x64x3x3, fan_out 576
    kaiming = math.sqrt(2 / (64 * 9))
    assert abs(w.std().item() / kaiming - 1) < 0.05  # construction = the code's init
    init_weights(model, "paper_normal")
    for conv in (w, e_s.head.weight, dec.net[0][0].weight, dec.net[1][0].weight, dec.net[7].weight):
        assert abs(conv.std().item() / 0.01 - 1) < 0.1 and abs(conv.mean().item()) < 2e-3
    assert (e_s.head.bias == 0).all() and (dec.net[0][0].bias == 0).all()
    dec.net[0][1].weight.data.fill_(3.0)
    init_weights(model, "paper_normal001")  # alias
    assert (dec.net[0][1].weight == 1).all() and (dec.net[0][1].bias == 0).all()
    init_weights(model, "code_kaiming")
    assert abs(w.std().item() / kaiming - 1) < 0.05
    # head and decoder back at PyTorch defaults: kaiming_uniform(a=sqrt 5) -> std 1/sqrt(3 fan_in)
    head_std = 1 / math.sqrt(3 * 256)
    assert abs(e_s.head.weight.std().item() / head_std - 1) < 0.1 and (e_s.head.bias != 0).all()
    with pytest.raises(ValueError):
        init_weights(model, "xavier")
