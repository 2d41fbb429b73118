"""The three-level GANSeg generator (paper §3.1-3.3, supplement Figure 1).

Level 1: z_point -> MLP -> n_per x K points (tanh(out / 20)) -> part centres and scales (eq. 1);
         z_app -> MLP -> w_dynamic, times a learned constant embedding per part (eq. 2-3).
Level 2: masks from SPADE ResBlocks started from a positional encoding of (pixel - point) for
         all points (eq. 5) and styled by heatmap-weighted part embeddings (eq. 4, 6); K+1-way
         softmax, channel 0 = background.
Level 3: foreground SPADE branch styled by mask-weighted embeddings (eq. 7-8), started from an
         encoding relative to the part centres; background AdaIN branch started from an
         encoding relative to a random background centre (eq. 9-10); blend in feature space and
         a small conv head to RGB (eq. 11).

Every feature map carries a ``margin``-pixel border (eq. 12), kept at that width by a crop after
each 2x upsample, and no absolute coordinate enters anywhere. Two ways of computing the same
function with less work: SPADE's first style conv on the K weight maps instead of the D-channel
style map (``style_conv=factored``, layers.FactoredStyle), and each branch's last block computed on
the image area only (its BatchNorm statistics still see the margin), since only that is kept. With ``coord_grid=pixel_centres``
and ``mask_resize=area`` shifting all points and the background centre by whole pixels shifts
masks and images by the same pixels (up to a band at the border); the code's defaults (corner
grid, bilinear mask resize) are off by up to half a pixel per upsample (audit row 13). Defaults
and weights equal the official generator to float64 rounding (tests/test_ganseg_golden.py). The latent of one image is ``[z_point | z_app | z_bg | n_u]``, all standard normal;
the background centre is u_bg = erf(n_u / sqrt 2), which is uniform on (-1, 1)^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from segbench.methods.ganseg.config import GeneratorConfig
from segbench.methods.ganseg.layers import (LEAK, AdaINConvBlock, FactoredStyle, RelativePositionalEncoding,
                                   SPADEResBlock, crop_margin, embed_maps, heatmaps, kaiming_init, linear_tau,
                                   mlp, part_statistics, upsample_and_crop)


@dataclass
class Layout:
    """Level-1 output. ``points`` / ``centres`` / ``sigma`` are None in the no_points ablation."""

    points: torch.Tensor | None  # [B, K*n_per, 2], grouped by part
    centres: torch.Tensor | None  # [B, K, 2]
    sigma: torch.Tensor | None  # [B, K]: eq. 1 (or the fixed value); width of the heatmaps
    part_emb: torch.Tensor  # [B, K, D_emb]: w_k (eq. 3)
    bg_emb: torch.Tensor  # [B, D_emb]: w_bg (eq. 9)
    bg_centre: torch.Tensor  # [B, 1, 2]: u_bg
    shape_code: torch.Tensor | None = None  # [B, D_emb], only in the no_points ablation


class GANSegGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig, num_parts: int, n_per: int) -> None:
        super().__init__()
        self.config, self.num_parts, self.n_per = config, num_parts, n_per
        c = config
        self.resolutions = tuple(int(r) for r in c.resolutions)
        self.margin = int(c.margin)
        d, k = c.embed_dim, num_parts
        # Level 1. Independent noise for position and appearance (§3.1).
        point_out = d if c.no_points else 2 * n_per * k
        depth_points, depth_app, depth_bg = c.mlp_depths
        self.point_mlp = mlp(c.noise_dim, c.noise_dim, point_out, depth_points)
        self.app_mlp = mlp(c.noise_dim, c.noise_dim, d, depth_app)
        self.bg_mlp = mlp(c.noise_dim, c.noise_dim, d, depth_bg)
        self.part_const = nn.Parameter(torch.randn(k, d))  # w_k^const (an nn.Embedding in the code)
        widths = list(c.channels) + [d]  # stage i: widths[i] -> widths[i+1]
        n_stages = len(self.resolutions)
        start0 = self.resolutions[0] + 2 * self.margin
        # Level 2: mask branch widths[0] -> mask_width -> ... -> K+1.
        mask_widths = [widths[0]] + [c.mask_width] * (n_stages - 1) + [k + 1]
        if c.no_points:
            self.mask_const = nn.Parameter(torch.randn(1, widths[0], start0, start0))
            self.mask_blocks = nn.ModuleList(AdaINConvBlock(mask_widths[i], mask_widths[i + 1], d, c.adain_hidden)
                                             for i in range(n_stages))
            self.fg_const = nn.Parameter(torch.randn(1, widths[0], start0, start0))
        else:
            self.mask_start = RelativePositionalEncoding(n_per * k, widths[0], c.coord_grid)
            self.mask_blocks = nn.ModuleList(
                SPADEResBlock(mask_widths[i], mask_widths[i + 1], d, c.spade_hidden, c.spade_kernel)
                for i in range(n_stages))
            self.fg_start = RelativePositionalEncoding(k, widths[0], c.coord_grid)
        # Level 3: foreground (SPADE) and background (AdaIN) branches.
        self.fg_blocks = nn.ModuleList(SPADEResBlock(widths[i], widths[i + 1], d, c.spade_hidden,
                                                     c.spade_kernel) for i in range(n_stages))
        if not c.no_separate_bg:
            self.bg_start = RelativePositionalEncoding(1, widths[0], c.coord_grid)
            self.bg_blocks = nn.ModuleList(AdaINConvBlock(widths[i], widths[i + 1], d, c.adain_hidden)
                                           for i in range(n_stages))
        if c.single_conv_head:
            self.head = nn.Sequential(nn.Conv2d(d, 3, 1))
        else:
            self.head = nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.LeakyReLU(LEAK), nn.Conv2d(d, 3, 3, padding=1))
        kaiming_init(self)
        if not c.batchnorm:  # the test configuration without batch statistics (config.batchnorm)
            for module in self.modules():
                if isinstance(getattr(module, "norm", None), nn.BatchNorm2d):
                    module.norm = nn.Identity()

    # ----------------------------------------------------------------- latents
    @property
    def latent_dim(self) -> int:
        return 3 * self.config.noise_dim + 2

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    def split_latent(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n = self.config.noise_dim
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"latent must be [B, {self.latent_dim}], got {tuple(z.shape)}")
        return z[:, :n], z[:, n:2 * n], z[:, 2 * n:3 * n], z[:, 3 * n:]

    # ----------------------------------------------------------------- level 1
    def layout(self, z: torch.Tensor) -> Layout:
        z_point, z_app, z_bg, n_u = self.split_latent(z)
        return self.layout_from_noise(z_point, z_app, z_bg, torch.erf(n_u / math.sqrt(2)))  # N(0,1) -> U(-1,1)

    def layout_from_noise(self, z_point: torch.Tensor, z_app: torch.Tensor, z_bg: torch.Tensor,
                          bg_centre: torch.Tensor) -> Layout:
        """Level 1 from the three noise vectors [B, noise_dim] and the background centre
        u_bg [B, 2] in (-1, 1)^2 (x, y): the official code's (input_noise0, input_noise2,
        input_noise1, bg_trans) with (row, col) swapped to (x, y)."""
        c = self.config
        u = bg_centre
        if c.bg_shift == "horizontal":  # the code zeroes the vertical centre (generator.py:415)
            u = torch.stack([u[:, 0], torch.zeros_like(u[:, 1])], dim=1)
        part_emb = self.app_mlp(z_app)[:, None, :] * self.part_const[None]  # eq. 3
        bg_emb = self.bg_mlp(z_bg)
        if c.no_points:
            return Layout(None, None, None, part_emb, bg_emb, u[:, None], shape_code=self.point_mlp(z_point))
        points = torch.tanh(self.point_mlp(z_point).view(z_point.shape[0], -1, 2) / c.point_divisor)
        return self.layout_from_points(points, part_emb, bg_emb, u[:, None])

    def layout_from_points(self, points: torch.Tensor, part_emb: torch.Tensor, bg_emb: torch.Tensor,
                           bg_centre: torch.Tensor) -> Layout:
        """Layout from explicit points [B, K*n_per, 2] (also used by the equivariance tests)."""
        centres, sigma = part_statistics(points, self.n_per)
        if self.config.heatmap == "linear":
            sigma = linear_tau(points, self.n_per)
        if self.config.fixed_sigma:
            sigma = torch.full_like(sigma, self.config.fixed_sigma_value)
        return Layout(points, centres, sigma, part_emb, bg_emb, bg_centre)

    # ----------------------------------------------------------------- level 2
    def part_heatmaps(self, layout: Layout, resolution: int) -> torch.Tensor:
        return heatmaps(layout.centres, layout.sigma, resolution, self.margin, self.config.heatmap,
                        self.config.coord_grid)

    def mask_logits(self, layout: Layout) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mask logits on the image area [B, K+1, R, R] (channel 0 background) and the last
        stage's heatmaps with their margin [B, K, R+2m, R+2m] (None without points)."""
        m, res = self.margin, self.resolutions
        b = layout.part_emb.shape[0]
        if self.config.no_points:
            x = self.mask_const.expand(b, -1, -1, -1)
            return self._run_blocks(self.mask_blocks, x, lambda r: layout.shape_code), None
        maps: dict[int, torch.Tensor] = {}
        styles: dict[int, torch.Tensor | FactoredStyle] = {}

        def style_at(r: int) -> torch.Tensor | FactoredStyle:
            if r not in styles:  # heatmaps recomputed per resolution on its margin grid (§3.3)
                maps[r] = self.part_heatmaps(layout, r)
                styles[r] = self.style(maps[r], layout.part_emb)  # W_mask (eq. 4)
            return styles[r]

        x = self._run_blocks(self.mask_blocks, self.mask_start(layout.points, res[0], m), style_at)
        return x, maps[res[-1]]

    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor, style_at) -> torch.Tensor:
        """One branch: block i at resolution i (styled by ``style_at(resolution)``), 2x
        upsample-and-crop between stages; returns the image area [B, C, R, R]. The margin only
        matters up to the last block (its BatchNorms), so the last block computes the image area
        alone where the margin covers its halo."""
        m, res = self.margin, self.resolutions
        last = len(blocks) - 1
        for i, block in enumerate(blocks):
            crop = m if i == last and m >= block.min_crop else 0
            x = block(x, style_at(res[i]), crop)
            if i < last and res[i + 1] != res[i]:
                x = upsample_and_crop(x, m)
        return x if crop else crop_margin(x, m)

    def style(self, weights: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor | FactoredStyle:
        """The SPADE style map sum_k weights_k w_k, dense or factored (config.style_conv)."""
        if self.config.style_conv == "factored":
            return FactoredStyle(weights, embeddings)
        return embed_maps(weights, embeddings)

    # ----------------------------------------------------------------- level 3
    def masks_at(self, masks: torch.Tensor, resolution: int) -> torch.Tensor:
        """Image-area masks [B, C, R, R] -> stage resolution with a replicated margin (as the
        released code pads them).

        ``mask_resize=bilinear`` (the code, generator.py:398): bilinear, align_corners=False, no
        antialiasing, so a 4x reduction reads only the central 2x2 of each 4x4 block.
        ``area``: averaging over aligned f x f blocks (f = R / resolution), which commutes with
        shifts by multiples of f pixels. The replicated margin is only exact when the masks are
        constant along the border (pure background there), so the foreground branch is
        equivariant for objects away from the border; the mask branch is equivariant everywhere
        inside its margin."""
        f = masks.shape[-1] // resolution
        if f == 1:
            pooled = masks
        elif self.config.mask_resize == "bilinear":
            pooled = F.interpolate(masks, size=(resolution, resolution), mode="bilinear", align_corners=False)
        else:
            pooled = F.avg_pool2d(masks, f)
        return F.pad(pooled, [self.margin] * 4, mode="replicate") if self.margin else pooled

    def foreground(self, layout: Layout, masks: torch.Tensor) -> torch.Tensor:
        """Foreground features on the image area [B, D, R, R] (eq. 7-8) from the image-area masks."""
        m, res = self.margin, self.resolutions
        b = masks.shape[0]
        if self.config.no_separate_bg:  # the background is one more "part" with its own embedding
            weights, emb = masks, torch.cat([layout.bg_emb[:, None], layout.part_emb], dim=1)
        else:
            weights, emb = masks[:, 1:], layout.part_emb
        if self.config.no_points:
            x = self.fg_const.expand(b, -1, -1, -1)
        else:
            x = self.fg_start(layout.centres, res[0], m)
        styles: dict[int, torch.Tensor | FactoredStyle] = {}

        def style_at(r: int) -> torch.Tensor | FactoredStyle:
            if r not in styles:
                styles[r] = self.style(self.masks_at(weights, r), emb)  # W_fg (eq. 7)
            return styles[r]

        return self._run_blocks(self.fg_blocks, x, style_at)

    def background(self, layout: Layout) -> torch.Tensor:
        """Background features on the image area [B, D, R, R] (eq. 9-10)."""
        x = self.bg_start(layout.bg_centre, self.resolutions[0], self.margin)
        return self._run_blocks(self.bg_blocks, x, lambda r: layout.bg_emb)

    def render(self, layout: Layout, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Levels 2-3 from a layout: images in [-1, 1] [B,3,R,R], their pre-tanh ``head_out``,
        masks [B,K+1,R,R] (softmax, channel 0 background) and heatmaps [B,K,R,R] (None without
        points). Given ``masks``, level 3 uses them instead of the mask branch's (tests, mask
        editing)."""
        m = self.margin
        maps = None
        if masks is None:
            logits, maps = self.mask_logits(layout)
            masks = torch.softmax(logits, dim=1)
        fg = self.foreground(layout, masks)
        if self.config.no_separate_bg:
            features = fg
        else:
            bg = self.background(layout)
            m_bg = masks[:, :1]
            features = (1 - m_bg) * fg + m_bg * bg  # eq. 11, blended in feature space
        if self.config.head_lrelu:
            features = F.leaky_relu(features, LEAK)  # generator.py:439
        head_out = self.head(features)
        return {"images": torch.tanh(head_out), "head_out": head_out, "masks": masks,
                "heatmaps": None if maps is None else crop_margin(maps, m)}

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor | Layout]:
        layout = self.layout(z)
        return {**self.render(layout), "layout": layout}
