"""Liu et al. training (paper §3, A.1-A.4; train_SCOPSP.py) on the shared loop core: one stage ``liu``.

Per step (``batch_size`` images, each warped twice by independent TPS warps, A.1):

    S1 = softmax(E_s(x1)), S2 = softmax(E_s(x2))       part maps, channel 0 = background
    F1 = squeeze(S1, E_a(x1)), F2 = squeeze(S2, E_a(x2))    part features [B, K+1, L] (Eq. 2)
    x^2 = D(coords(expand(S2, F1)))                    x2's shape with x1's appearance (Eq. 3-4)
    x^1 = D(coords(expand(S1, F2)))
    loss = l_rec (P(x1, x^1; m1) + P(x2, x^2; m2)) + l_fg (L_fg(S1) + L_fg(S2))
         + l_bg (L_bg(S1) + L_bg(S2)) + l_cls (L_cls(F1) + L_cls(F2))          (Eq. 12)

with m the warps' validity masks, every term on both views (loss/baseloss.py:39-49) and the two
views through the networks separately, as the code (scopsplus.py ``full_pipeline``: BatchNorm
statistics per view). One Adam over E_a, E_s, D and ArcFace's W (coupled L2 weight decay, constant
lr: the code's StepLR is never stepped). ``methods.common.loop`` does the rest: snapshots in
``ctx.checkpoint_dir("liu")`` hold the networks, the perceptual loss's adaptive weights and meters,
Adam, the data-order and TPS generators, the global RNG and the rest of the current epoch, so a
continued run is bit-identical on CPU to one that never stopped.

Mixed precision and data parallelism (``methods.common.precision``, ``methods.common.parallel``):
every rank draws the global batch's image indices and both views' TPS parameters from the shared
streams and keeps its slice; E_a, E_s and D run under ``config.amp``'s autocast, the losses
(the perceptual network, L_fg, L_bg and ArcFace) in float32 on float32 copies of their outputs;
``precision.Updater`` averages the gradients over the ranks and steps Adam. The perceptual loss's
meter is fed the ranks' mean layer losses, so its adaptive weights are the same on every rank;
BatchNorm statistics are per rank (DistributedDataParallel's default).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segbench.methods.common.images import EpochOrder, ImageStore
from segbench.methods.common.loop import Snapshot, run_steps
from segbench.methods.common.parallel import world
from segbench.methods.common.precision import Updater
from segbench.methods.context import FitContext, to_device
from segbench.methods.liu_parts.config import RESUMABLE_FIELDS, LiuPartsConfig, native_map_size, total_steps
from segbench.methods.liu_parts.losses import ArcFace, background_loss, foreground_concentration
from segbench.methods.liu_parts.networks import (AppearanceEncoder, Decoder, ShapeEncoder, add_coords,
                                                 count_parameters, expand, init_weights, squeeze)
from segbench.methods.liu_parts.tps import TPSWarp

STAGE = "liu"
# Offsets from the run seed for the loop's generators (network init uses the seed itself).
DATA_SEED, TPS_SEED, FIGURE_SEED = 1, 2, 3
NETWORKS = ("appearance", "shape", "decoder", "arcface")


def build_networks(config: LiuPartsConfig, seed: int) -> dict[str, nn.Module]:
    """E_a, E_s (+ 1x1 head), D and ArcFace, initialised from ``seed`` (``config.init``) without
    touching the caller's RNG."""
    k1 = config.num_parts + 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        appearance = AppearanceEncoder(config.appearance_blocks, config.width, config.layer3_stride)
        shape = ShapeEncoder(k1, config.shape_blocks, config.width, config.layer3_stride)
        decoder = Decoder(appearance.out_channels + 2, config.decoder_hidden,
                          upsamples=2 if config.layer3_stride == 1 else 3)
        for net in (appearance, shape, decoder):
            init_weights(net, config.init)
        rows = k1 if config.arcface_rows == "parts_plus_bg" else config.num_parts
        arcface = ArcFace(appearance.out_channels, rows, config.arcface_scale, config.arcface_margin)
    return {"appearance": appearance, "shape": shape, "decoder": decoder, "arcface": arcface}


def build_perceptual(config: LiuPartsConfig) -> nn.Module:
    """The reconstruction loss P (``config.perceptual``); a missing vgg19 file is its one-line error."""
    from segbench.methods.liu_parts.perceptual import PerceptualLoss

    p = config.perceptual
    with torch.random.fork_rng(devices=[]):  # building it never moves the loop's RNG
        return PerceptualLoss(network=p.network, form=p.form, refresh_every=p.refresh_every,
                              image_size=config.image_size, pixel_levels=p.pixel_levels)


def part_probs(shape: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """softmax(E_s(images)) over the K+1 channels (scopsplus.py:117)."""
    return torch.softmax(shape(images), dim=1)


def cross_reconstruct(nets: dict[str, nn.Module], x1: torch.Tensor, x2: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. 1-4 for a pair of views: part maps, part features and the two cross reconstructions."""
    s1, s2 = part_probs(nets["shape"], x1), part_probs(nets["shape"], x2)
    f1, f2 = squeeze(s1, nets["appearance"](x1)), squeeze(s2, nets["appearance"](x2))
    x2_hat = nets["decoder"](add_coords(expand(s2, f1)))  # x2's shape, x1's appearance
    x1_hat = nets["decoder"](add_coords(expand(s1, f2)))  # x1's shape, x2's appearance
    return {"s1": s1, "s2": s2, "f1": f1, "f2": f2, "x1_hat": x1_hat, "x2_hat": x2_hat}


def warp_pairs(tps: TPSWarp, images: torch.Tensor, rng: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Two independent TPS warps of each image: (x1, m1, x2, m2); parameters drawn from ``rng``
    (CPU) for view 1 of every image, then view 2."""
    return warp_views(tps, images, tps.sample(2 * images.shape[0], rng))


def warp_views(tps: TPSWarp, images: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(x1, m1, x2, m2) of ``images`` [b] warped by ``params`` [2b]: rows ``:b`` are view 1 of
    every image, rows ``b:`` view 2 (one ``grid_sample`` for both)."""
    b = images.shape[0]
    warped, mask = tps.warp(images.repeat(2, 1, 1, 1), params)
    return warped[:b], mask[:b], warped[b:], mask[b:]


def _area_stats(probs: torch.Tensor) -> dict[str, Any]:
    areas = probs.detach().float().mean(dim=(0, 2, 3)).cpu()  # fraction of the map per channel
    return {"area_bg": areas[0].item(), "area_parts": [round(a, 5) for a in areas[1:].tolist()],
            "area_part_min": areas[1:].min().item()}


def train_liu(config: LiuPartsConfig, train_images: torch.utils.data.Dataset,
              ctx: FitContext) -> tuple[dict[str, nn.Module], nn.Module, dict[str, Any]]:
    """Train on ``ctx.device`` at precision ``config.amp``; return (networks in eval mode on
    ``ctx.device``, fp32 weights, the perceptual loss, info). Stats rows (phase ``liu``): window
    means of ``rec``, ``fg``, ``bg``, ``cls`` (the terms with a non-zero weight, each summed over
    both views) and ``total``; the last batch's part areas; it/s, images/s of the global batch,
    peak memory and world size. Figures go to ``ctx.figures_dir`` at the end. ``amp`` joins the
    snapshot's settings unless it is ``off``."""
    device, seed = ctx.device, ctx.seed
    shard = world()
    shard.local_size(config.batch_size)  # the global batch must split over the ranks
    n = len(train_images)
    steps = total_steps(config, n)
    settings = {**{k: v for k, v in dataclasses.asdict(config).items()
                   if k not in RESUMABLE_FIELDS and not (k == "amp" and v == "off")},
                "seed": seed, "num_images": n}
    updater = Updater(config.amp, device)
    nets = build_networks(config, seed)
    perceptual = build_perceptual(config)
    for module in (*nets.values(), perceptual):
        module.to(device)
    params = [p for name in NETWORKS for p in nets[name].parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)
    order = EpochOrder(n, torch.Generator().manual_seed(seed + DATA_SEED))
    tps_rng = torch.Generator().manual_seed(seed + TPS_SEED)
    snap = Snapshot(STAGE, ctx.checkpoint_dir(STAGE), settings,
                    modules={**nets, "perceptual": perceptual}, optimizers={"adam": opt},
                    generators={"data": order.rng, "tps": tps_rng},
                    get_extra=order.get_extra, set_extra=order.set_extra, device=device, lrs={"adam": config.lr},
                    updater=updater)
    weights = config.weights()
    info: dict[str, Any] = {"steps": steps, "weights": weights,
                            "parameters": {name: count_parameters(nets[name]) for name in NETWORKS},
                            "native_map_size": native_map_size(config)}
    info["perceptual"] = perceptual.describe()  # network, weights file and layers actually used
    if snap.resume(steps) and snap.step == steps:  # finished: nothing to train
        for m in nets.values():
            m.eval()
        return nets, perceptual, {**info, "resumed_from_step": steps, "steps_this_call": 0, **updater.describe()}
    with torch.random.fork_rng(devices=[]):  # loading the images never moves the loop's RNG
        store = ImageStore(train_images, config.image_size, config.preload_max_mb, what="liu_parts")
    tps = TPSWarp(config.image_size, config.tps.grid, config.tps.nonlinear_sd, config.tps.bernoulli_sd,
                  config.tps.translation_sd)
    k, k1 = config.num_parts, config.num_parts + 1
    divide_by = k1 if config.arcface_divide == "parts_plus_bg" else k
    last: dict[str, torch.Tensor] = {}

    def step(i: int) -> dict[str, torch.Tensor]:
        b = config.batch_size  # global; this rank computes its slice
        indices = order.take(b)
        params = tps.sample(2 * b, tps_rng)  # view 1 of every image, then view 2 (warp_pairs' order)
        indices, view1, view2 = shard.local(indices, params[:b], params[b:])
        images = to_device(store.uint8(indices), device).float() / 255
        x1, m1, x2, m2 = warp_views(tps, images, torch.cat([view1, view2]))
        with updater.autocast():
            out = cross_reconstruct(nets, x1, x2)
        out = {name: value.float() for name, value in out.items()}  # the losses run in float32
        last["s1"] = out["s1"]
        terms: dict[str, torch.Tensor] = {}
        if weights["rec"]:
            terms["rec"] = perceptual(x1, out["x1_hat"], m1) + perceptual(x2, out["x2_hat"], m2)
        if weights["fg"]:
            terms["fg"] = (foreground_concentration(out["s1"], config.fg_reduce)
                           + foreground_concentration(out["s2"], config.fg_reduce))
        if weights["bg"]:
            terms["bg"] = background_loss(out["s1"], config.bg_form) + background_loss(out["s2"], config.bg_form)
        if weights["cls"]:
            terms["cls"] = nets["arcface"](out["f1"], divide_by) + nets["arcface"](out["f2"], divide_by)
        total = sum(weights[name] * value for name, value in terms.items())
        updater.step(total, opt, "adam")
        return {**{name: value.detach() for name, value in terms.items()}, "total": total.detach()}

    for m in (*nets.values(), perceptual):
        m.train()
    report = run_steps(snap, steps, step, log_every=config.log_every, checkpoint_every=config.checkpoint_every,
                       stats=ctx.stats, progress=ctx.progress, desc="liu_parts",
                       on_log=lambda: _area_stats(last["s1"]), batch_size=config.batch_size)
    for m in nets.values():
        m.eval()
    if ctx.figures_dir is not None and config.figure_count:
        save_figures(ctx, config, nets, store, tps)
    info.update({"resumed_from_step": report["resumed_from_step"], "steps_this_call": report["steps_this_call"],
                 "seconds": report["seconds"], "it_s": report["it_s"], "device": report["device"],
                 "images_s": report["images_s"], "world_size": report["world_size"], **updater.describe()})
    return nets, perceptual, info


@torch.no_grad()
def save_figures(ctx: FitContext, config: LiuPartsConfig, nets: dict[str, nn.Module], store: ImageStore,
                 tps: TPSWarp) -> None:
    """TPS pairs, cross reconstructions and argmax part maps of the first ``figure_count`` fit
    images (networks in eval mode; warps from a generator of their own, so figures never move
    the training streams)."""
    from segbench.methods.liu_parts.figures import save_pair_grid

    n = min(config.figure_count, len(store))
    device = next(nets["shape"].parameters()).device
    images = store.uint8(torch.arange(n)).to(device).float() / 255
    x1, _, x2, _ = warp_pairs(tps, images, torch.Generator().manual_seed(ctx.seed + FIGURE_SEED))
    out = cross_reconstruct(nets, x1, x2)
    size = images.shape[-2:]
    s1 = F.interpolate(out["s1"], size=size, mode="bilinear", align_corners=False)
    s2 = F.interpolate(out["s2"], size=size, mode="bilinear", align_corners=False)
    save_pair_grid(ctx.figures_dir / "liu_parts_pairs.png", x1, x2, out["x1_hat"], out["x2_hat"], s1, s2)
