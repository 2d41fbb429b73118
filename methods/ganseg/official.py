"""The authors' checkpoint format -> segbench GANSeg (names, layouts and the configuration).

Official formats (xingzhehe/GANSeg, commit a3f5078):
- GAN, ``log/gan_<class>_k<K>/checkpoints/epoch_<e>.model`` = {'generator', 'discriminator',
  'optim_gen', 'optim_disc'} (train_gan.py:287-295), beside ``log/gan_<class>_k<K>/parameters.json``.
- Segmenter, ``log/seg_<class>_k<K>/checkpoints/epoch_<e>.model`` = {'detector', 'optim'}
  (train_seg.py:128-134); 'detector' wraps torchvision's deeplabv3_resnet50 at attribute
  ``model`` (models/segmenter.py:12-13), so every key starts with ``model.``.

Every layout change below is exact (a permutation, a sign or a reshape):
- points are (row, col) in the code and (x, y) here: the point MLP's last layer swaps each
  output pair, and the positional encodings swap their input column pairs;
- the code encodes point - pixel, we encode pixel - point: the encoding weights are negated;
- the code puts the background mask channel last, we put it first: the last mask block's
  output convolutions are permuted to [K, 0, ..., K-1];
- nn.Embedding / Conv2d 1x1 / Sequential indices become our parameter / Linear / indices.
The official generator key list is in ../shared/golden/ganseg/*_generator_state.pt.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping

import torch

from segbench.benchmark.errors import UserError
from segbench.methods.ganseg.config import GANSegConfig

EXTEND_PIXEL = 10  # the code's margin (generator.py: self.extend_pixel)
_SPADE = {"conv": "shared", "conv_gamma": "gamma", "conv_beta": "beta", "norm": "norm"}
_MLPS = {"gen_keypoints_layer": "point_mlp", "gen_keypoints_embedding_noise": "app_mlp",
         "gen_background_embedding": "bg_mlp"}
_STARTS = {"x_start": "fg_start", "mask_start": "mask_start", "bg_start": "bg_start"}
_DISC = {"net.0": "conv1", "net.2": "conv2", "downsample.0": "down", "conv_res": "skip"}


class OfficialFormatError(UserError):
    """A checkpoint that does not follow the official format; the message names the key."""


def _mlp_depth(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    indices = {int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.(\d+)\.", k))}
    if not indices:
        raise OfficialFormatError(f"official generator state has no '{prefix}.*' keys")
    return max(indices) + 1


def _rename_generator_key(key: str, depths: Mapping[str, int]) -> str:
    parts = key.split(".")
    head = parts[0]
    if key == "keypoints_embedding.weight":
        return "part_const"
    if head in _MLPS:  # i.model.0.w (Linear + LReLU) -> 2i.w; the last Linear i.w -> 2i.w
        i = int(parts[1])
        if i == depths[head] - 1 and len(parts) == 3:
            return f"{_MLPS[head]}.{2 * i}.{parts[2]}"
        if parts[2:4] == ["model", "0"] and len(parts) == 5:
            return f"{_MLPS[head]}.{2 * i}.{parts[4]}"
    if head in _STARTS and parts[1:2] == ["pe"] and len(parts) == 3:
        return f"{_STARTS[head]}.fc.{parts[2]}"
    if head in ("mask_spade_blocks", "spade_blocks") and len(parts) >= 4:
        branch = "mask_blocks" if head == "mask_spade_blocks" else "fg_blocks"
        sub = {"spade_shortcut": "spade_s", "conv_shortcut": "conv_s"}.get(parts[2], parts[2])
        if sub in ("spade1", "spade2", "spade_s") and parts[3] in _SPADE:
            return ".".join([branch, parts[1], sub, _SPADE[parts[3]], *parts[4:]])
        if sub in ("conv1", "conv2", "conv_s") and len(parts) == 4:
            return ".".join([branch, parts[1], sub, parts[3]])
    if head == "adain_blocks" and len(parts) >= 4:
        if parts[2] == "spade1" and parts[3] in _SPADE:
            return ".".join(["bg_blocks", parts[1], "adain", _SPADE[parts[3]], *parts[4:]])
        if parts[2] == "conv1" and len(parts) == 4:
            return f"bg_blocks.{parts[1]}.conv.{parts[3]}"
    if head == "conv" and len(parts) == 3:
        return f"head.{parts[1]}.{parts[2]}"
    raise OfficialFormatError(f"official generator key {key!r} does not map to a segbench GANSeg parameter")


def official_generator_key(key: str, depths: tuple[int, int, int]) -> str:
    """The official name of segbench generator parameter ``key`` (the inverse of the renaming;
    used to name a key that an official file lacks). ``depths``: (points, app, bg) MLP depths."""
    parts = key.split(".")
    head = parts[0]
    if key == "part_const":
        return "keypoints_embedding.weight"
    mlps = {v: (k, d) for (k, v), d in zip(_MLPS.items(), depths)}
    if head in mlps:
        name, depth = mlps[head]
        i = int(parts[1]) // 2
        return f"{name}.{i}.{parts[2]}" if i == depth - 1 else f"{name}.{i}.model.0.{parts[2]}"
    starts = {v: k for k, v in _STARTS.items()}
    if head in starts:
        return f"{starts[head]}.pe.{parts[-1]}"
    spade = {v: k for k, v in _SPADE.items()}
    if head in ("mask_blocks", "fg_blocks"):
        branch = "mask_spade_blocks" if head == "mask_blocks" else "spade_blocks"
        sub = {"spade_s": "spade_shortcut", "conv_s": "conv_shortcut"}.get(parts[2], parts[2])
        rest = [spade.get(parts[3], parts[3]), *parts[4:]] if sub.startswith("spade") else parts[3:]
        return ".".join([branch, parts[1], sub, *rest])
    if head == "bg_blocks":
        if parts[2] == "adain":
            return ".".join(["adain_blocks", parts[1], "spade1", spade.get(parts[3], parts[3]), *parts[4:]])
        return f"adain_blocks.{parts[1]}.conv1.{parts[-1]}"
    if head == "head":
        return f"conv.{parts[1]}.{parts[2]}"
    return key


def load_converted(module: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str,
                   official_name=lambda key: key) -> None:
    """Strict load of a converted official state; one line naming the first offending official key."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise OfficialFormatError(f"official {what} lacks {official_name(missing[0])!r}"
                                  + (f" (and {len(missing) - 1} more keys)" if len(missing) > 1 else ""))
    for key, value in state.items():
        if key not in expected:
            raise OfficialFormatError(f"official {what} key {official_name(key)!r} has no segbench counterpart")
        if tuple(value.shape) != tuple(expected[key].shape):
            raise OfficialFormatError(f"official {what} key {official_name(key)!r} has shape {tuple(value.shape)}, "
                                      f"expected {tuple(expected[key].shape)} for this configuration")
    module.load_state_dict(state, strict=True)


def _swap_pairs(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Swap every (row, col) pair along ``dim`` (length 2N) into (x, y) = (col, row)."""
    idx = torch.arange(t.shape[dim]).view(-1, 2).flip(1).reshape(-1)
    return t.index_select(dim, idx)


def convert_generator(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official generator state_dict -> segbench ``GANSegGenerator`` state_dict."""
    if "keypoints_embedding.weight" not in state:
        raise OfficialFormatError("official generator state lacks 'keypoints_embedding.weight'")
    num_parts = state["keypoints_embedding.weight"].shape[0]
    depths = {name: _mlp_depth(state, name) for name in _MLPS}
    last_mask = max(int(k.split(".")[1]) for k in state if k.startswith("mask_spade_blocks."))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "init_extend_coord":  # a constant grid; we build ours from the config
            continue
        new = _rename_generator_key(key, depths)
        if key.startswith(f"gen_keypoints_layer.{depths['gen_keypoints_layer'] - 1}."):
            value = _swap_pairs(value, 0)  # output pairs (row, col) -> (x, y)
        elif new.endswith("start.fc.weight"):
            value = -_swap_pairs(value[:, :, 0, 0], 1)  # point - pixel -> pixel - point, (x, y)
        elif re.fullmatch(rf"mask_blocks\.{last_mask}\.(conv2|conv_s)\.(weight|bias)", new):
            order = torch.tensor([num_parts, *range(num_parts)])
            value = value.index_select(0, order)  # background last -> first
        out[new] = value.clone()
    return out


def convert_discriminator(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official discriminator state_dict (``conv.i.{conv_res,net.0,net.2,downsample.0}``,
    ``fc.{0,2}``) -> segbench ``Discriminator`` state_dict."""
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"conv\.(\d+)\.(conv_res|net\.0|net\.2|downsample\.0)\.(weight|bias)", key)
        f = re.fullmatch(r"fc\.([02])\.(weight|bias)", key)
        if m:
            out[f"blocks.{m.group(1)}.{_DISC[m.group(2)]}.{m.group(3)}"] = value.clone()
        elif f:
            out[f"head.{f.group(1)}.{f.group(2)}"] = value.clone()
        else:
            raise OfficialFormatError(f"official discriminator key {key!r} does not map to a segbench parameter")
    return out


def convert_segmenter(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official 'detector' state (``model.`` + torchvision deeplabv3_resnet50) -> our DeepLab."""
    bad = next((k for k in state if not k.startswith("model.")), None)
    if bad is not None:
        raise OfficialFormatError(f"official segmenter key {bad!r} does not start with 'model.'")
    return {k[len("model."):]: v.clone() for k, v in state.items()}


def stage_resolutions(first: int, n_stages: int) -> tuple[int, ...]:
    """The code's stage pattern: 4 stages r, r, 2r, 4r (celeba_wild/taichi branch) and 6 stages
    r, r, 2r, 2r, 4r, 4r (cub/flower branch), as in every released parameters.json."""
    if n_stages == 4:
        return (first, first, 2 * first, 4 * first)
    if n_stages == 6:
        return (first, first, 2 * first, 2 * first, 4 * first, 4 * first)
    raise OfficialFormatError(f"official generator with {n_stages} stages: give its feature_map_sizes "
                              "(parameters.json)")


def _shape(state: Mapping[str, torch.Tensor], key: str, what: str) -> torch.Size:
    if key not in state:
        raise OfficialFormatError(f"official generator state lacks {key!r} (needed for {what})")
    return state[key].shape


def infer_config(state: Mapping[str, torch.Tensor], base: GANSegConfig,
                 parameters: Mapping[str, Any] | None = None) -> GANSegConfig:
    """``base`` with every architecture field read from the official generator state: K, points
    per part, noise and embedding widths, MLP depths, stage widths, SPADE/AdaIN hidden widths,
    the head; stage resolutions from ``parameters`` (the run's parameters.json) or, without it,
    from ``init_extend_coord`` and the code's stage pattern. Loss weights from ``parameters``."""
    params = dict(parameters or {})
    k, embed = _shape(state, "keypoints_embedding.weight", "K and the embedding width")
    depths = tuple(_mlp_depth(state, name) for name in _MLPS)
    noise = _shape(state, "gen_keypoints_layer.0.model.0.weight", "the noise width")[1]
    n_points = _shape(state, f"gen_keypoints_layer.{depths[0] - 1}.weight", "points per part")[0] // 2
    n_stages = 1 + max(int(key.split(".")[1]) for key in state if key.startswith("spade_blocks."))
    channels = tuple(_shape(state, f"spade_blocks.{i}.spade1.norm.running_mean", "the stage widths")[0]
                     for i in range(n_stages))
    mask_width = _shape(state, "mask_spade_blocks.0.conv2.weight", "the mask width")[0]
    spade = _shape(state, "mask_spade_blocks.0.spade1.conv.weight", "the SPADE hidden width")
    adain_hidden = _shape(state, "adain_blocks.0.spade1.conv.weight", "the AdaIN hidden width")[0]
    if "feature_map_sizes" in params:
        resolutions = tuple(int(r) for r in str(params["feature_map_sizes"]).split(","))
    else:
        side = int(round(_shape(state, "init_extend_coord", "the first stage size")[1] ** 0.5))
        resolutions = stage_resolutions(side - 2 * EXTEND_PIXEL, n_stages)
    if len(resolutions) != n_stages:
        raise OfficialFormatError(f"feature_map_sizes {resolutions} has {len(resolutions)} stages, "
                                  f"the generator state {n_stages}")
    if int(params.get("use_linear", 1)) != 1 or int(params.get("smaller_init_mask", 0)) != 0:
        raise OfficialFormatError("parameters.json: only use_linear=1, smaller_init_mask=0 (every released "
                                  "run) is supported")
    generator = dataclasses.replace(
        base.generator, noise_dim=int(noise), embed_dim=int(embed), mlp_depths=depths, resolutions=resolutions,
        channels=channels, mask_width=int(mask_width), spade_hidden=int(spade[0]), spade_kernel=int(spade[-1]),
        adain_hidden=int(adain_hidden), margin=EXTEND_PIXEL, point_divisor=20.0,
        single_conv_head="conv.2.weight" not in state, heatmap="linear", bg_shift="horizontal",
        head_lrelu=True, coord_grid="corners", mask_resize="bilinear", no_points=False, no_separate_bg=False,
        fixed_sigma=False)
    overrides: dict[str, Any] = {"num_parts": int(k), "n_per": int(n_points) // int(k),
                                 "image_size": resolutions[-1], "generator": generator}
    if "con_penalty_coef" in params:
        overrides["lambda_con"] = float(params["con_penalty_coef"])
    if "area_penalty_coef" in params:
        overrides["lambda_area"] = float(params["area_penalty_coef"])
    return dataclasses.replace(base, **overrides)


def discriminator_channels(state: Mapping[str, torch.Tensor]) -> tuple[tuple[int, ...], int]:
    """(block widths, fc hidden width) of an official discriminator state."""
    n = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("conv."))
    return (tuple(state[f"conv.{i}.conv_res.weight"].shape[0] for i in range(n)),
            int(state["fc.0.weight"].shape[0]))
