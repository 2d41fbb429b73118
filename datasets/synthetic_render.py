"""Procedural renderer of articulated part-structured figures on cluttered backgrounds.

numpy only (no torch), so it can be timed and tested without the ML stack. A scene is
sampled in resolution-free units (the image spans [0, 1] on both axes) and then drawn at
any pixel size, so the same (seed, split, index) gives the same pose at 32, 64 or 128 px;
only the final per-pixel sensor noise depends on the resolution, and it is drawn last.

Every shape is a signed distance field evaluated over its own bounding-box window of the
pixel grid: the sign gives the hard label map and a clipped distance gives one pixel of
anti-aliasing in the image, so labels and pixels never disagree by more than that pixel.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np

PART_NAMES = ("background", "head", "torso", "left_arm", "right_arm", "left_leg", "right_leg")
# "left" is the viewer's left (smaller x in the upright figure's frame).
LANDMARK_NAMES = ("head_top", "neck", "left_hand", "right_hand",
                  "left_hip", "right_hip", "left_foot", "right_foot")
# Distinct mean colours so parts are identifiable; per-instance jitter, texture, shading
# and colour-matched distractors keep colour alone from solving the task.
PART_MEAN_COLOURS = np.array([
    [0.00, 0.00, 0.00],   # background (unused)
    [0.88, 0.68, 0.52],   # head
    [0.20, 0.35, 0.78],   # torso
    [0.85, 0.20, 0.18],   # left arm
    [0.18, 0.68, 0.25],   # right arm
    [0.92, 0.78, 0.15],   # left leg
    [0.58, 0.25, 0.70],   # right leg
], dtype=np.float32)
HEAD, TORSO, L_ARM, R_ARM, L_LEG, R_LEG = 1, 2, 3, 4, 5, 6
# Upright figure height (head top to feet with straight legs) in torso lengths; used to
# turn the sampled "object height as a fraction of the image" into a torso length.
_FIGURE_HEIGHT_T = 2.33
_COLOUR_JITTER = 0.08
_MIN_RADIUS_PX = 0.6   # thinner limbs would fall between pixel centres and vanish at 32 px
_NOISE_GRID = 5        # low-frequency value noise control points per side


def _rot(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


def _limb(start: np.ndarray, side: float, a1: float, a2: float, l1: float, l2: float) -> np.ndarray:
    """Joint chain [start, mid, end]; angles in degrees from straight down, positive outward."""
    d1 = np.array([side * np.sin(np.deg2rad(a1)), np.cos(np.deg2rad(a1))])
    d2 = np.array([side * np.sin(np.deg2rad(a2)), np.cos(np.deg2rad(a2))])
    mid = start + l1 * d1
    return np.stack([start, mid, mid + l2 * d2])


def _appearance(rng: np.random.Generator, mean: np.ndarray, amp_max: float = 0.15) -> dict[str, Any]:
    """Colour + stripe texture (random frequency/direction/phase/amplitude) parameters."""
    jitter = rng.uniform(-_COLOUR_JITTER, _COLOUR_JITTER, 3)
    u = rng.uniform(size=4).tolist()   # Python floats keep the float32 pixel maths float32
    return {"colour": np.clip(mean + jitter, 0.0, 1.0).astype(np.float32),
            "freq": 1.5 + 3.0 * u[0], "angle": np.pi * u[1], "phase": 2 * np.pi * u[2], "amp": amp_max * u[3]}


def sample_scene(rng: np.random.Generator) -> dict[str, Any]:
    """Pose, appearance and background of one image in resolution-free units."""
    # --- figure in its body frame: torso centre at origin, y down, unit = torso length.
    height = rng.uniform(0.35, 0.70)
    rotation = rng.uniform(-40.0, 40.0)
    half_w = rng.uniform(0.24, 0.32)
    head_r = rng.uniform(0.19, 0.25)
    head_ry = head_r * rng.uniform(1.0, 1.15)
    head_c = np.array([0.0, -0.5 - 0.85 * head_ry])
    arm_a1, arm_bend = rng.uniform(5, 150, 2), rng.uniform(-110, 110, 2)
    leg_a1, leg_bend = rng.uniform(-10, 40, 2), rng.uniform(-60, 60, 2)
    limbs, radii = [], []
    for k, side in enumerate((-1.0, 1.0)):
        limbs.append(_limb(np.array([side * 0.8 * half_w, -0.38]), side,
                           arm_a1[k], arm_a1[k] + arm_bend[k], 0.42, 0.40))
        radii.append((0.085, 0.07))
    for k, side in enumerate((-1.0, 1.0)):
        limbs.append(_limb(np.array([side * 0.5 * half_w, 0.40]), side,
                           leg_a1[k], leg_a1[k] + leg_bend[k], 0.52, 0.50))
        radii.append((0.11, 0.09))
    landmarks = np.stack([head_c - [0.0, 0.9 * head_ry], [0.0, -0.5], limbs[0][2], limbs[1][2],
                          limbs[2][0], limbs[3][0], limbs[2][2], limbs[3][2]])

    # --- body frame -> image units: scale, rotate, then translate anywhere the figure
    # stays mostly inside the frame: up to 15% of its box may leave on each side, so
    # hands/feet are sometimes cut off (and flagged invisible) but no part often vanishes.
    scale = height / _FIGURE_HEIGHT_T
    R = _rot(rotation) * scale
    head_box = head_c + np.array([[-head_ry, -head_ry], [head_ry, head_ry]])
    pts = np.concatenate([np.concatenate(limbs), head_box, [[0.0, 0.5]]]) @ R.T
    lo, hi = pts.min(0) - 0.11 * scale, pts.max(0) + 0.11 * scale
    slack = 0.15 * (hi - lo)
    t_lo, t_hi = -slack - lo, 1.0 + slack - hi
    u = rng.uniform(size=2)
    shift = np.where(t_lo <= t_hi, t_lo + u * (t_hi - t_lo), 0.5 - (lo + hi) / 2)
    place = lambda p: np.asarray(p) @ R.T + shift  # noqa: E731

    parts = {
        TORSO: ("ellipse", place([0.0, 0.0]), (half_w * scale, 0.5 * scale), rotation),
        HEAD: ("ellipse", place(head_c), (head_r * scale, head_ry * scale), rotation),
    }
    for label, chain, (r1, r2) in zip((L_ARM, R_ARM, L_LEG, R_LEG), limbs, radii):
        parts[label] = ("chain", place(chain), (r1 * scale, r2 * scale), 0.0)
    appearance = {p: _appearance(rng, PART_MEAN_COLOURS[p]) for p in range(1, 7)}

    # --- background: gradient + value noise + distractors (some coloured like parts).
    n_distract = int(rng.integers(4, 10))
    distractors = []
    for _ in range(n_distract):
        kind = ("disc", "ellipse", "rect", "stick")[int(rng.integers(4))]
        centre, size, angle = rng.uniform(-0.1, 1.1, 2), rng.uniform(0.04, 0.2, 2), rng.uniform(0, 180)
        mean = (PART_MEAN_COLOURS[rng.integers(1, 7)] if rng.uniform() < 0.4
                else rng.uniform(0.05, 0.95, 3).astype(np.float32))
        distractors.append((kind, centre, size, angle, _appearance(rng, mean)))
    return {
        "parts": parts, "appearance": appearance, "distractors": distractors,
        "landmarks": place(landmarks), "ref_length": float(scale),
        "light": (float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0.1, 0.25))),
        "gradient": (rng.uniform(0.1, 0.9, (2, 3)).astype(np.float32), float(rng.uniform(0, 2 * np.pi))),
        "noise": (rng.uniform(-1, 1, (_NOISE_GRID, _NOISE_GRID, 3)).astype(np.float32), float(rng.uniform(0.05, 0.2))),
        "pixel_noise": rng.uniform(0.01, 0.03),
    }


@lru_cache(maxsize=16)
def _upsample_matrix(size: int, grid: int) -> np.ndarray:
    """[size, grid] bilinear interpolation weights (separable upsampling as two matmuls)."""
    pos = (np.arange(size) + 0.5) / size * (grid - 1)
    i0 = np.minimum(pos.astype(int), grid - 2)
    w = pos - i0
    m = np.zeros((size, grid), np.float32)
    m[np.arange(size), i0] = 1 - w
    m[np.arange(size), i0 + 1] = w
    return m


def _window(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[slice, slice] | None:
    c0, r0 = np.maximum(np.floor(lo).astype(int), 0)
    c1, r1 = np.minimum(np.ceil(hi).astype(int) + 1, size)
    return None if c0 >= c1 or r0 >= r1 else (slice(r0, r1), slice(c0, c1))


def _sdf(kind: str, xs: np.ndarray, ys: np.ndarray, centre, size, angle: float) -> np.ndarray:
    """Signed distance in pixels (negative inside) on the window's broadcast grid."""
    if kind == "chain":  # union of capsules along a joint chain, radius per segment
        d = None
        for (ax, ay), (bx, by), r in zip(centre[:-1], centre[1:], size):
            px, py, bax, bay = xs - ax, ys - ay, bx - ax, by - ay
            h = np.clip((px * bax + py * bay) / max(bax * bax + bay * bay, 1e-9), 0.0, 1.0)
            di = np.hypot(px - bax * h, py - bay * h) - r
            d = di if d is None else np.minimum(d, di)
        return d
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    dx, dy = xs - centre[0], ys - centre[1]
    u, v = c * dx + s * dy, c * dy - s * dx
    a, b = size
    if kind == "rect":
        qx, qy = np.abs(u) - a, np.abs(v) - b
        return np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    # ellipse: first-order distance approximation k0 (k0 - 1) / k1, exact enough for 1 px AA
    k0 = np.hypot(u / a, v / b)
    k1 = np.hypot(u / (a * a), v / (b * b)) + 1e-9
    return k0 * (k0 - 1.0) / k1


def _paint(img, labels, label, kind, centre, size, angle, look, light, ref, px) -> None:
    """Composite one textured, shaded shape over ``img`` (and ``labels`` if label > 0)."""
    centre = np.asarray(centre, np.float64) * px - 0.5   # image units -> pixel coordinates
    size = np.asarray(size, np.float64) * px
    if kind == "chain":
        size = np.maximum(size, _MIN_RADIUS_PX)
        lo, hi = centre.min(0) - size.max(), centre.max(0) + size.max()
    else:
        pad = size.max() * (1.42 if kind == "rect" else 1.0)
        lo, hi = centre - pad, centre + pad
    (mx, my), extent = ((lo + hi) / 2).tolist(), max(float((hi - lo).max()) / 2, 1.0)
    win = _window(lo - 1, hi + 1, img.shape[0])
    if win is None:
        return
    ys = np.arange(win[0].start, win[0].stop, dtype=np.float32)[:, None]
    xs = np.arange(win[1].start, win[1].stop, dtype=np.float32)[None, :]
    d = _sdf(kind, xs, ys, centre.tolist(), size.tolist(), float(angle))
    alpha = np.clip(0.5 - d, 0.0, 1.0)
    # brightness: stripes (period in torso lengths) + linear shading along the light direction
    k, (l_angle, l_amp) = 2 * np.pi * look["freq"] / (ref * px), light
    tex = look["amp"] * np.sin(k * (math.cos(look["angle"]) * xs + math.sin(look["angle"]) * ys) + look["phase"])
    shade = l_amp / extent * (math.cos(l_angle) * (xs - mx) + math.sin(l_angle) * (ys - my))
    colour = look["colour"] * (1.0 + tex + shade)[..., None]
    sub = img[win]
    sub += alpha[..., None] * (colour - sub)
    if label:
        labels[win][d < 0] = label


# Drawing order: later parts overwrite earlier ones (arms in front of the torso, head last).
Z_ORDER = (L_LEG, R_LEG, TORSO, L_ARM, R_ARM, HEAD)


def draw_scene(scene: dict[str, Any], size: int, rng: np.random.Generator) -> dict[str, Any]:
    """Image uint8 [size, size, 3] and its ground truth (keys of ``datasets.base``)."""
    (c0, c1), g_angle = scene["gradient"]
    grid, n_amp = scene["noise"]
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    ramp = math.cos(g_angle) * coords[None, :] + math.sin(g_angle) * coords[:, None]
    ramp = (ramp - ramp.min()) / max(ramp.max() - ramp.min(), 1e-6)
    m = _upsample_matrix(size, _NOISE_GRID)
    img = c0 + ramp[..., None] * (c1 - c0) + n_amp * (m @ grid.transpose(2, 0, 1) @ m.T).transpose(1, 2, 0)
    labels = np.zeros((size, size), np.int64)
    ref = scene["ref_length"]
    for kind, centre, sz, angle, look in scene["distractors"]:
        if kind == "stick":
            d = sz[0] * np.array([np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))])
            centre, sz, kind = np.stack([centre - d, centre + d]), (0.15 * sz[1],), "chain"
        elif kind == "disc":
            sz = (sz[0], sz[0])
        _paint(img, labels, 0, kind, centre, sz, angle, look, scene["light"], ref, size)
    for p in Z_ORDER:
        kind, centre, sz, angle = scene["parts"][p]
        _paint(img, labels, p, kind, centre, sz, angle, scene["appearance"][p], scene["light"], ref, size)
    img += rng.normal(0.0, scene["pixel_noise"], img.shape).astype(np.float32)
    landmarks = (scene["landmarks"] * size - 0.5).astype(np.float32)
    return {
        "image": (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8),
        "part_labels": labels,
        "fg_mask": labels > 0,
        "landmarks": landmarks,
        "landmark_visible": np.all((landmarks >= -0.5) & (landmarks <= size - 0.5), axis=1),
        "ref_length": float(ref * size),
    }


def render(seed: int, split_code: int, index: int, size: int) -> dict[str, Any]:
    """Render image ``index`` of a split: a pure function of its arguments."""
    rng = np.random.default_rng([seed, split_code, index])
    return draw_scene(sample_scene(rng), size, rng)


def render_image(index: int, *, seed: int, split_code: int, size: int) -> np.ndarray:
    """Only the image of ``render`` (uint8 [size, size, 3]): the loader of the fit view, which must
    hand a method pixels and nothing else."""
    return render(seed, split_code, int(index), size)["image"]
