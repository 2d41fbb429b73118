"""Look at a pretrained generator's latent directions without training a segmenter or scoring.

    python -m segbench.methods.latent_direction.explore --set generator.kind=face_dcgan --out runs/explore/faces

Runs step 1 of the method (v_l, v_d) with ``--out`` as its run folder and writes there:
``stats.jsonl`` (``direction_light`` / ``direction_dark`` rows and the ``direction_summary``:
first/last loss, v_l . v_d), ``fit_info.json`` (the generator), the resumable direction
snapshots (a second call with the same settings loads them instead of searching again),
``directions.pt`` (``torch.load(path, weights_only=True)`` gives a dict with the unit vectors
``v_light`` and ``v_dark``, the per-step ``losses_light`` / ``losses_dark``, ``dot`` and ``seed``;
``--seed`` sets the seed), ``figures/latent_shift_strip.png`` (Figure 3 style) and
``figures/generated_pairs.png`` (32 refined image/mask pairs, as the segmenter would see them),
plus ``summary.json`` with the refinement pass rates. Presets and ``--set`` keys are the
method's (``python -m benchmark run --method latent_direction``); ``generator.kind=train`` needs
fit images and is only available through ``benchmark run``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from segbench.benchmark.config import parse_set_args
from segbench.benchmark.errors import UserError
from segbench.methods.common.runtime import torch_threads
from segbench.methods.context import FitContext, write_json_atomic
from segbench.methods.latent_direction.generators import resolved_kind
from segbench.methods.latent_direction.method import FIGURE_SEED_OFFSET, LatentDirection

DIRECTIONS_EXPORT = "directions.pt"
N_FILTER_PROBE = 256  # codes drawn to estimate how often the refinement filters pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m segbench.methods.latent_direction.explore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = LatentDirection.config_for(args.preset, parse_set_args(args.set))
        if resolved_kind(config.generator) == "train":
            raise UserError("explore needs a pretrained generator (generator.kind=face_dcgan|ganseg_run|custom)")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        ctx = FitContext(seed=args.seed, device=args.device, progress=not args.no_progress,
                         num_threads=args.threads, run_dir=out)
        with torch_threads(ctx.num_threads):
            summary = explore(LatentDirection(config), ctx)
        write_json_atomic(out / "summary.json", summary)
        print(json.dumps({k: v for k, v in summary.items() if k != "generator"}, indent=2, default=str))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def explore(method: LatentDirection, ctx: FitContext) -> dict:
    """Directions, figures and a filter probe for ``method``'s pretrained generator; the summary."""
    config, out = method.config, ctx.run_dir
    generator = method.build_generator(None, ctx)
    ctx.save_info({"generator": generator.describe(), "device": str(ctx.device)})
    t0 = time.perf_counter()
    found = method.find_directions(generator, ctx)
    seconds = time.perf_counter() - t0
    cached = bool(found["from_snapshot"])
    torch.save({k: found[k] for k in ("v_light", "v_dark", "losses_light", "losses_dark", "dot", "seed")},
               out / DIRECTIONS_EXPORT)
    method.v_light, method.v_dark = found["v_light"], found["v_dark"]
    method.save_figures(generator, ctx.figures_dir, ctx.seed)
    probe = method.pair_stream(generator)
    # One round of codes, refined but not used to fill a batch: the counts are the filters' own.
    probe.filter_round(N_FILTER_PROBE, torch.Generator().manual_seed(ctx.seed + FIGURE_SEED_OFFSET + 1))
    counts = {k: v for k, v in probe.counts.as_dict().items()
              if k not in ("used", "surplus_dropped", "filled_unfiltered", "calls")}
    summary = {"v_light_dot_v_dark": found["dot"], "directions_from_cache": cached,
               "direction_seconds": None if cached else round(seconds, 1),
               "direction_steps": config.direction.steps,
               "direction_it_s": None if cached else 2 * config.direction.steps / seconds,
               **{f"{name}_loss_{where}": float(found[f"losses_{name}"][i])
                  for name in ("light", "dark") for where, i in (("first", 0), ("last", -1))},
               **{f"{name}_loss_first10_mean": float(found[f"losses_{name}"][:10].mean())
                  for name in ("light", "dark")},
               **{f"{name}_loss_last10_mean": float(found[f"losses_{name}"][-10:].mean())
                  for name in ("light", "dark")},
               "filter_probe": counts, "device": str(ctx.device), "generator": generator.describe()}
    ctx.log(phase="direction_summary", **{k: v for k, v in summary.items() if k != "generator"})
    return summary


if __name__ == "__main__":
    sys.exit(main())
