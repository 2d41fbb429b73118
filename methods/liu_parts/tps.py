"""Thin-plate-spline warps that make Liu et al.'s training pairs (spec §2.1, paper A.1).

Each training image is warped twice, independently; the network reconstructs one warp from the
other's appearance. A warp is a TPS with ``grid x grid`` control points on a regular grid over
[-1, 1]^2 and parameters ``W`` of shape ``[grid*grid + 3, 2]``:

* rows ``0 .. grid*grid-1`` are the non-linear weights ``w = nonlinear_sd*N(0,1) +
  bernoulli_sd*B*N(0,1)``, ``B ~ Bernoulli(0.5)``, drawn per control point and per coordinate;
* row ``grid*grid`` is the translation ``[tx, ty]`` with ``tx, ty ~ N(0, translation_sd^2)``;
* rows ``grid*grid+1`` and ``grid*grid+2`` are the linear part ``[[1, 0], [0, 1]]`` (no rotation,
  no scaling).

The sampling grid is ``[U(|p - c_1|), ..., U(|p - c_G|), 1, x, y] @ W`` for every pixel
``p = (x, y)``, ``U = r^2 log r^2`` (squared distance times its log, the squared distance clipped
at 1e-8). Pixels sit at ``linspace(-1, 1, S)`` along each axis and the grid is used with
``F.grid_sample(align_corners=False)``, the convention of the original code: even the identity
warp therefore samples slightly outside the image at the borders (half of the 1-px border is
zero padding; the validity mask there is 0.5, 0.25 in the corners). Control points are ordered
row-major, x varying fastest: ``c_j = (lin[j % grid], lin[j // grid])``.

Everything random is drawn from the ``torch.Generator`` given to :meth:`TPSWarp.sample`, on the
CPU, so a seeded generator reproduces the warps exactly on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    """U = r^2 log r^2 of squared distances ``r2`` (clipped at 1e-8, so U(0) ~ -1.8e-7)."""
    r2 = r2.clamp(min=1e-8)
    return r2 * torch.log(r2)


class TPSWarp:
    """Random TPS warps of ``image_size x image_size`` images (spec §2.1 defaults)."""

    def __init__(self, image_size: int, grid: int = 10, nonlinear_sd: float = 0.001,
                 bernoulli_sd: float = 0.005, translation_sd: float = 0.1):
        if int(image_size) < 2:
            raise ValueError(f"image_size must be >= 2, got {image_size}")
        if int(grid) < 2:
            raise ValueError(f"grid must be >= 2 control points per axis, got {grid}")
        self.image_size = int(image_size)
        self.grid_points = int(grid)
        self.nonlinear_sd = float(nonlinear_sd)
        self.bernoulli_sd = float(bernoulli_sd)
        self.translation_sd = float(translation_sd)
        self.num_params = self.grid_points ** 2 + 3
        self._kernel_cpu = self._build_kernel()  # [S*S, G+3] float64, built once
        self._kernels: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    # ------------------------------------------------------------------ geometry
    def control_points(self) -> torch.Tensor:
        """[grid*grid, 2] control points (x, y), row-major with x varying fastest."""
        lin = torch.linspace(-1.0, 1.0, self.grid_points, dtype=torch.float64)
        cy, cx = torch.meshgrid(lin, lin, indexing="ij")
        return torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=1)

    def pixel_points(self) -> torch.Tensor:
        """[S*S, 2] pixel coordinates (x, y) on ``linspace(-1, 1, S)``, row-major (x fastest)."""
        lin = torch.linspace(-1.0, 1.0, self.image_size, dtype=torch.float64)
        py, px = torch.meshgrid(lin, lin, indexing="ij")
        return torch.stack([px.reshape(-1), py.reshape(-1)], dim=1)

    def _build_kernel(self) -> torch.Tensor:
        pix = self.pixel_points()
        ctrl = self.control_points()
        r2 = ((pix[:, None, :] - ctrl[None, :, :]) ** 2).sum(-1)  # [S*S, G]
        ones = torch.ones(pix.shape[0], 1, dtype=torch.float64)
        return torch.cat([tps_kernel(r2), ones, pix], dim=1)  # [S*S, G+3]: [U..., 1, x, y]

    def kernel(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The precomputed ``[S*S, grid*grid+3]`` matrix ``[U(r), 1, x, y]`` on ``device`` (None:
        where it was built, host memory); ``grid`` asks for the parameters' device."""
        key = (torch.device(device) if device is not None else self._kernel_cpu.device, dtype)
        if key not in self._kernels:
            self._kernels[key] = self._kernel_cpu.to(device=key[0], dtype=dtype)
        return self._kernels[key]

    # ------------------------------------------------------------------ parameters
    def identity(self, n: int = 1) -> torch.Tensor:
        """Parameters of the identity TPS (zero non-linear weights, zero translation)."""
        params = torch.zeros(n, self.num_params, 2)
        params[:, -2, 0] = 1.0
        params[:, -1, 1] = 1.0
        return params

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` random TPS parameter sets ``[n, grid*grid+3, 2]`` (CPU float32).

        Draw order from ``generator``: N(0,1) [n,G,2], Bernoulli(0.5) [n,G,2] (as uniform < 0.5),
        N(0,1) [n,G,2], translation N(0,1) [n,2]; nothing else is consumed.
        """
        g = self.grid_points ** 2
        shape = (int(n), g, 2)
        base = torch.randn(shape, generator=generator)
        bern = (torch.rand(shape, generator=generator) < 0.5).to(torch.float32)
        extra = torch.randn(shape, generator=generator)
        trans = torch.randn((int(n), 2), generator=generator) * self.translation_sd
        params = self.identity(int(n))
        params[:, :g] = self.nonlinear_sd * base + self.bernoulli_sd * bern * extra
        params[:, g] = trans
        return params

    # ------------------------------------------------------------------ warping
    def grid(self, params: torch.Tensor) -> torch.Tensor:
        """Sampling grid ``[n, S, S, 2]`` (x, y in grid_sample's [-1, 1] units) of ``params``."""
        if params.dim() != 3 or params.shape[1:] != (self.num_params, 2):
            raise ValueError(f"expected TPS parameters [n, {self.num_params}, 2], got {tuple(params.shape)}")
        dtype = params.dtype if params.dtype.is_floating_point else torch.float32
        kernel = self.kernel(params.device, dtype)
        out = torch.matmul(kernel, params.to(dtype))  # [n, S*S, 2]
        return out.view(params.shape[0], self.image_size, self.image_size, 2)

    def warp(self, images: torch.Tensor, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp ``images`` [n, C, S, S] with ``params``; returns (warped images, validity mask
        [n, 1, S, S] in [0, 1], the warp of a ones channel). Bilinear, zero padding,
        align_corners=False."""
        if images.dim() != 4 or images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images [n, C, {self.image_size}, {self.image_size}], "
                             f"got {tuple(images.shape)}")
        if params.shape[0] != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {params.shape[0]} TPS parameter sets")
        grid = self.grid(params.to(device=images.device, dtype=images.dtype))
        ones = torch.ones(images.shape[0], 1, *images.shape[-2:], device=images.device, dtype=images.dtype)
        both = torch.cat([images, ones], dim=1)  # one grid_sample for image and mask
        out = F.grid_sample(both, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out[:, :-1], out[:, -1:]
