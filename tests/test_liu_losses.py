"""liu_parts losses (spec §2.2-2.5): hand-computed values of L_fg, L_bg, ArcFace and the perceptual
loss (pixel form, adaptive weights, paper vs code forms, vgg19/inception loading)."""
import importlib.util
import math

import pytest
import torch
import torch.nn as nn

from segbench.benchmark.errors import UserError
from segbench.methods.liu_parts.losses import (ArcFace, background_loss, border_distance_map,
                                               foreground_concentration)
from segbench.methods.liu_parts.perceptual import (VGG19_FILE, VGG19_INITIAL_WEIGHTS, PerceptualLoss,
                                                   inception_layers)

pytestmark = pytest.mark.usefixtures("one_thread")

EPS = 1e-6


def _tiny_probs() -> torch.Tensor:
    """[2, 3, 2, 2]: part 1 has mass 0.5 (top row), part 2 mass 1.5 (left column)."""
    p1 = torch.tensor([[0.25, 0.25], [0.0, 0.0]], dtype=torch.float64)
    p2 = torch.tensor([[0.75, 0.0], [0.75, 0.0]], dtype=torch.float64)
    bg = 1.0 - p1 - p2
    return torch.stack([bg, p1, p2]).unsqueeze(0).repeat(2, 1, 1, 1)


# ----------------------------------------------------------------------------- L_fg

def test_foreground_concentration_hand_value():
    probs = _tiny_probs()
    assert torch.allclose(probs.sum(1), torch.ones(2, 2, 2, dtype=torch.float64))
    # part 1: mass 0.5 < 1 -> normalised to ~1: P~ = 0.25/(0.5+1e-6) at (x,y)=(0,0),(1,0); centre (0.5, 0);
    #         squared distances 0.25 each -> 2 * 0.25 * 0.25/(0.5+1e-6)
    part1 = 2 * 0.25 * 0.25 / (0.5 + EPS)
    # part 2: mass 1.5 >= 1 -> NOT normalised: P = 0.75 at (0,0),(0,1); centre (0, 0.5) -> 2 * 0.25 * 0.75
    part2 = 2 * 0.25 * 0.75
    got = foreground_concentration(probs, reduce="sum")
    assert got.item() == pytest.approx(part1 + part2, rel=1e-12)  # per image, batch of 2 identical
    assert foreground_concentration(probs, reduce="mean").item() == pytest.approx((part1 + part2) / 2, rel=1e-12)
    # the background channel is not a part: changing it alone does nothing
    other = probs.clone()
    other[:, 0] = 0.3
    assert foreground_concentration(other).item() == pytest.approx(part1 + part2, rel=1e-12)


def test_foreground_concentration_centre_is_normalised_and_differentiable():
    logits = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    loss = foreground_concentration(logits.softmax(1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # a part concentrated on one pixel has zero loss, whatever its mass
    probs = torch.zeros(1, 2, 4, 4)
    probs[0, 0] = 1.0
    probs[0, 0, 1, 2] = 0.9
    probs[0, 1, 1, 2] = 0.1
    assert foreground_concentration(probs).item() == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        foreground_concentration(probs, reduce="avg")


# ----------------------------------------------------------------------------- L_bg

def test_border_distance_map_code_form():
    d = border_distance_map(3, 3, "code")
    assert d.shape == (3, 3) and d.dtype == torch.float32
    corner = 2 * 0.01 ** 2
    for i, j in [(0, 0), (0, 2), (2, 0), (2, 2), (0, 1), (1, 0)]:  # corners and edge midpoints touch a border
        assert d[i, j].item() == pytest.approx(corner, rel=1e-6)
    assert d[1, 1].item() == pytest.approx(2 * 0.51 ** 2, rel=1e-6)
    d = border_distance_map(5, 4, "code")  # x on linspace(0,1,4): 0, 1/3, ...; y on linspace(0,1,5)
    assert d.shape == (5, 4)
    assert d[2, 1].item() == pytest.approx(2 * min((1 / 3 + 0.01) ** 2, (0.5 + 0.01) ** 2), rel=1e-6)


def test_border_distance_map_paper_form():
    d = border_distance_map(5, 5, "paper")  # pixel centres 0.5 .. 4.5, W = 5
    assert d[0, 0].item() == pytest.approx(0.25)
    assert d[4, 4].item() == pytest.approx(0.25)
    assert d[0, 2].item() == pytest.approx(0.25)
    assert d[1, 1].item() == pytest.approx(1.5 ** 2)
    assert d[2, 2].item() == pytest.approx(2.5 ** 2)
    assert torch.equal(d, d.flip(0)) and torch.equal(d, d.flip(1))  # symmetric
    d = border_distance_map(4, 6, "paper")
    assert d[1, 2].item() == pytest.approx(1.5 ** 2)  # v = 1.5 (H - v = 2.5), u = 2.5
    with pytest.raises(ValueError):
        border_distance_map(3, 3, "other")


def test_background_loss_hand_values():
    probs = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    probs[:, 1] = 1.0
    probs[0, 0, 1, 1], probs[0, 1, 1, 1] = 1.0, 0.0  # image 0: background mass 1 at the centre
    probs[1, 0, 0, 0], probs[1, 1, 0, 0] = 0.5, 0.5  # image 1: background mass 0.5 in a corner
    centre_code, corner_code = 2 * 0.51 ** 2, 2 * 0.01 ** 2
    # image 0: z0 = 1 + 1e-6 -> min(z0, 1) = 1, not normalised; image 1: 0.5 -> 0.5 / (0.5 + 1e-6)
    want = (centre_code * 1.0 + corner_code * 0.5 / (0.5 + EPS)) / 2
    assert background_loss(probs, "code").item() == pytest.approx(want, rel=1e-6)
    want = (1.5 ** 2 * 1.0 + 0.5 ** 2 * 0.5 / (0.5 + EPS)) / 2
    assert background_loss(probs, "paper").item() == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- ArcFace

def _unit(angle: float) -> list[float]:
    return [math.cos(angle), math.sin(angle)]


def test_arcface_logit_with_margin_at_known_angles():
    arc = ArcFace(feat_dim=2, rows=3, scale=20.0, margin=0.5)
    with torch.no_grad():
        arc.weight.copy_(torch.tensor([_unit(0.0), [0.0, 3.0], [-2.0, 0.0]]))  # rows at 0, 90, 180 degrees
    theta = math.radians(60)
    feats = torch.tensor([[5 * math.cos(theta), 5 * math.sin(theta)]])  # |F| irrelevant
    logits = arc.logits(feats, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(20 * math.cos(theta + 0.5), abs=1e-5)  # target: cos(theta+m)
    assert logits[0, 1].item() == pytest.approx(20 * math.cos(math.radians(30)), abs=1e-5)  # others: cos
    assert logits[0, 2].item() == pytest.approx(20 * math.cos(math.radians(120)), abs=1e-5)
    # target beyond pi - m: fall back to cos(theta) - m sin(m)
    theta = math.radians(170)
    assert theta > math.pi - 0.5
    logits = arc.logits(torch.tensor([_unit(theta)]), torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(20 * (math.cos(theta) - 0.5 * math.sin(0.5)), abs=1e-5)
    code = ArcFace(2, 3, scale=30.0)  # the code's scale: every logit scaled by 30 instead of 20
    with torch.no_grad():
        code.weight.copy_(arc.weight)
    feats = torch.tensor([_unit(1.0)])
    assert torch.allclose(code.logits(feats, torch.tensor([1])), 1.5 * arc.logits(feats, torch.tensor([1])))


def test_arcface_init_is_xavier_uniform():
    torch.manual_seed(0)
    arc = ArcFace(feat_dim=256, rows=9)
    assert arc.weight.shape == (9, 256) and arc.weight.requires_grad
    bound = math.sqrt(6 / (9 + 256))
    assert arc.weight.abs().max().item() <= bound
    assert arc.weight.abs().max().item() > 0.9 * bound


@pytest.mark.parametrize("rows", ["k_plus_1", "k"])
def test_arcface_loss_and_target_mapping(rows):
    s, m, k = 4.0, 0.5, 2  # a small scale keeps the hand CE well above float32 rounding
    feats = torch.zeros(3, k + 1, 3)  # [B, K+1, L], L = 3
    feats[:, 0] = torch.tensor([1.0, 1.0, 1.0])  # background: never a sample
    feats[:, 1] = torch.tensor([0.0, 2.0, 0.0])  # part 1 along e1
    feats[:, 2] = torch.tensor([0.0, 0.0, 0.5])  # part 2 along e2
    if rows == "k_plus_1":
        arc = ArcFace(3, k + 1, scale=s, margin=m)
        weight = torch.eye(3)  # row 0 = background (e0), part i -> row i = e_i
        negatives = 2
    else:
        arc = ArcFace(3, k, scale=s, margin=m)
        weight = torch.eye(3)[1:]  # part i -> row i-1 = e_i
        negatives = 1
    with torch.no_grad():
        arc.weight.copy_(weight)
    # each part: target cos = 1 -> cos(m); every negative row is orthogonal -> 0
    ce = -math.log(math.exp(s * math.cos(m)) / (math.exp(s * math.cos(m)) + negatives))
    assert arc(feats, divide_by=k + 1).item() == pytest.approx(2 * ce / (k + 1), rel=1e-5)
    assert arc(feats, divide_by=k).item() == pytest.approx(2 * ce / k, rel=1e-5)
    assert arc(feats.unsqueeze(-1).unsqueeze(-1), divide_by=k).item() == pytest.approx(2 * ce / k, rel=1e-5)
    # swapping the two parts makes every target wrong -> a much larger loss
    assert arc(feats[:, [0, 2, 1]], divide_by=k).item() > 5 * 2 * ce / k
    # gradients reach W and the features
    feats.requires_grad_(True)
    arc(feats * 1.0 + 0.1, divide_by=k).backward()
    assert arc.weight.grad is not None and torch.isfinite(feats.grad).all()


def test_arcface_rejects_row_mismatch():
    arc = ArcFace(4, rows=5)
    with pytest.raises(ValueError):
        arc(torch.randn(2, 3, 4), divide_by=2)  # K = 2 parts, 5 rows
    with pytest.raises(ValueError):
        arc(torch.randn(2, 5, 3), divide_by=4)  # feat_dim mismatch


# ----------------------------------------------------------------------------- perceptual: pixel

def _pixel_example():
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float64)
    x_hat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]], dtype=torch.float64)
    return x, x_hat, mask


def test_pixel_perceptual_hand_values_paper_and_code_forms():
    x, x_hat, mask = _pixel_example()
    l0 = (1 + 0 + 9 + 16) / 4  # mean of m * d^2
    paper = PerceptualLoss("pixel", form="paper")
    assert paper(x, x_hat, mask).item() == pytest.approx(l0)
    code = PerceptualLoss("pixel", form="code")
    assert code(x, x_hat, mask).item() == pytest.approx(l0 * l0 / 1)
    # the code form's factor (sum_j l_j)/n carries gradient: d(l^2) = 2 l dl
    x_hat.grad = None
    paper(x, x_hat, mask, update_meter=False).backward()
    g_paper = x_hat.grad.clone()
    x_hat.grad = None
    code(x, x_hat, mask, update_meter=False).backward()
    assert torch.allclose(x_hat.grad, 2 * l0 * g_paper)
    # a multi-channel mask is averaged over its channels first
    assert paper(x, x_hat, mask.repeat(1, 3, 1, 1), update_meter=False).item() == pytest.approx(l0)
    # pyramid: level 2 = 2x2 average; mask pooled to 0.75, d = 2.5
    l1 = 0.75 * 2.5 ** 2
    pyr = PerceptualLoss("pixel", form="paper", pixel_levels=2)
    assert pyr.layers == ["input", "avgpool2"]
    assert pyr(x, x_hat, mask).item() == pytest.approx(l0 + l1)
    pyr_code = PerceptualLoss("pixel", form="code", pixel_levels=2)
    assert pyr_code(x, x_hat, mask).item() == pytest.approx((l0 + l1) * (l0 + l1) / 2)


def test_adaptive_weight_refresh_after_refresh_every_calls():
    x = torch.zeros(1, 1, 2, 2)
    mask = torch.ones(1, 1, 2, 2)
    loss = PerceptualLoss("pixel", form="paper", refresh_every=3)
    values = [1.0, 2.0, 6.0]  # l = value^2
    outs = [loss(x, torch.full((1, 1, 2, 2), v), mask).item() for v in values]
    assert outs == pytest.approx([1.0, 4.0, 36.0])  # weight 1 during the first three calls
    mean = (1 + 4 + 36) / 3
    assert loss.layer_weights.item() == pytest.approx(1 / (mean + 1e-6), rel=1e-6)
    assert int(loss.meter_count) == 0 and float(loss.meter_sum.sum()) == 0.0 and int(loss.refreshes) == 1
    assert loss(x, torch.full((1, 1, 2, 2), 2.0), mask).item() == pytest.approx(4 / (mean + 1e-6), rel=1e-6)
    # update_meter=False leaves the state alone
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    loss(x, torch.full((1, 1, 2, 2), 5.0), mask, update_meter=False)
    assert all(torch.equal(before[k], v) for k, v in loss.state_dict().items())
    # refresh_every=0 never refreshes
    fixed = PerceptualLoss("pixel", refresh_every=0)
    for v in values * 3:
        fixed(x, torch.full((1, 1, 2, 2), v), mask)
    assert fixed.layer_weights.item() == 1.0


def test_perceptual_state_is_only_weights_and_meters_and_resume_is_exact():
    loss = PerceptualLoss("pixel", form="code", refresh_every=4, pixel_levels=3)
    assert list(loss.parameters()) == []
    assert set(loss.state_dict()) == {"layer_weights", "meter_sum", "meter_count", "refreshes"}
    assert loss.describe() == {"network": "pixel", "weights": "none", "layers": ["input", "avgpool2", "avgpool4"]}
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(2, 3, 8, 8, generator=gen), torch.rand(2, 3, 8, 8, generator=gen)) for _ in range(7)]
    mask = torch.ones(2, 1, 8, 8)
    for x, xh in batches[:3]:
        loss(x, xh, mask)
    resumed = PerceptualLoss("pixel", form="code", refresh_every=4, pixel_levels=3)
    resumed(*batches[0], mask)  # its own history, overwritten by the load
    resumed.load_state_dict(loss.state_dict())
    for x, xh in batches[3:]:
        assert resumed(x, xh, mask).item() == loss(x, xh, mask).item()
    assert int(loss.refreshes) == int(resumed.refreshes) == 1
    assert torch.equal(loss.layer_weights, resumed.layer_weights)


def test_perceptual_rejects_bad_settings():
    with pytest.raises(UserError):
        PerceptualLoss("lpips")
    with pytest.raises(UserError):
        PerceptualLoss("pixel", form="both")


# ----------------------------------------------------------------------------- perceptual: vgg19

def test_vgg19_missing_file_is_a_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError) as info:
        PerceptualLoss("vgg19")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "checkpoints" / VGG19_FILE) in message
    assert "--set perceptual.network=inception|pixel" in message


def test_vgg19_with_a_weights_file(tmp_path, monkeypatch):
    from torchvision.models.vgg import cfgs, make_layers

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / "checkpoints" / VGG19_FILE
    torch.save({"nothing": torch.zeros(1)}, path)
    with pytest.raises(UserError) as info:  # a foreign file: one line, named
        PerceptualLoss("vgg19")
    assert str(path) in str(info.value) and "\n" not in str(info.value)

    torch.manual_seed(0)
    features = make_layers(cfgs["E"])  # stands in for the ImageNet file: same keys and shapes
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}
               | {"classifier.0.bias": torch.zeros(4096)}, path)
    loss = PerceptualLoss("vgg19", form="code", image_size=32)
    assert loss.describe() == {"network": "vgg19", "weights": f"imagenet:{path}",
                               "layers": ["input", "relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2"]}
    assert loss.layer_weights.tolist() == pytest.approx(list(VGG19_INITIAL_WEIGHTS))
    assert list(loss.parameters()) == [] and len(loss.state_dict()) == 4
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=gen)
    x_hat = torch.rand(2, 3, 32, 32, generator=gen, requires_grad=True)
    mask = torch.ones(2, 1, 32, 32)
    layer = loss.layer_losses(x, x_hat, mask)
    assert layer.shape == (6,) and torch.isfinite(layer).all() and (layer > 0).all()
    out = loss(x, x_hat, mask)
    out.backward()
    assert torch.isfinite(out) and x_hat.grad is not None and torch.isfinite(x_hat.grad).all()
    w = torch.tensor(VGG19_INITIAL_WEIGHTS, dtype=layer.dtype)
    assert out.item() == pytest.approx(((w * layer).sum() * layer.sum() / 6).item(), rel=1e-5)
    # layer 0 is the ImageNet-normalised image (the mean cancels in the difference)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert layer[0].item() == pytest.approx((((x - x_hat.detach()) / std) ** 2).mean().item(), rel=1e-5)
    assert all(not p.requires_grad for p in loss._net_for(torch.device("cpu")).parameters())


# ----------------------------------------------------------------------------- perceptual: inception

def _inception_available() -> bool:
    try:
        from segbench.feature_nets import locate_inception_weights

        locate_inception_weights()
    except Exception:
        return False
    return importlib.util.find_spec("torch_fidelity") is not None


def test_inception_layers_by_image_size():
    assert inception_layers(128) == ["input", "Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d", "Mixed_6e"]
    assert inception_layers(64) == ["input", "Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d"]
    assert inception_layers(32) == ["input", "Conv2d_2b_3x3", "Conv2d_4a_3x3"]
    assert inception_layers(8) == ["input"]


def test_inception_missing_weights_is_a_one_line_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGBENCH_FID_INCEPTION_WEIGHTS", str(tmp_path / "default_1.pt"))
    with pytest.raises(UserError) as info:
        PerceptualLoss("inception", image_size=64)
    assert "\n" not in str(info.value)
    assert str(tmp_path / "default_1.pt") in str(info.value)
    assert "perceptual.network=pixel" in str(info.value)


@pytest.mark.skipif(not _inception_available(), reason="fid extra (TF-Inception weights) not installed")
def test_inception_builds_and_gives_a_finite_loss_at_64px():
    loss = PerceptualLoss("inception", form="paper", image_size=64)
    info = loss.describe()
    assert info["network"] == "inception" and info["weights"].startswith("tf_inception:")
    assert info["layers"] == ["input", "Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5d"]
    assert list(loss.parameters()) == [] and len(loss.state_dict()) == 4
    assert not any(isinstance(m, nn.Conv2d) for m in loss.modules())
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    x_hat = torch.rand(2, 3, 64, 64, generator=gen, requires_grad=True)
    out = loss(x, x_hat, torch.ones(2, 1, 64, 64))
    out.backward()
    assert torch.isfinite(out) and out.item() > 0
    assert torch.isfinite(x_hat.grad).all() and x_hat.grad.abs().sum() > 0
    assert loss(x, x.clone(), torch.ones(2, 1, 64, 64)).item() == 0.0
    with pytest.raises(UserError):
        PerceptualLoss("inception", image_size=10)
