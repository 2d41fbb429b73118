"""GPU check: speed and peak memory of the GPU-heavy stages, in fp32 and mixed precision.

    python -m segbench.benchmark.gpu_check                      # on a GPU machine: < 5 minutes
    python -m segbench.benchmark.gpu_check --out runs/gpu_check.json
    python -m benchmark gpu-check --amp off,bf16,fp16           # the same through the CLI
    make gpu-check                                              # writes runs/gpu_check.json
    python -m segbench.benchmark.gpu_check --device cpu --tiny  # seconds on a CPU (plumbing only)

Stages, each once per ``--amp`` mode (default ``off,bf16``), all through the real code paths:

``gan``        GANSeg ``paper`` preset GAN training (``methods.ganseg.train.train_gan``: one D and
               one G step per iteration, penalties on their schedules) for ``--steps`` (50)
               iterations at batch 64 on random images; ``amp`` is the config's field.
``segmenter``  The ``paper`` preset's segmenter (DeepLabV3-ResNet50, batch 64 at 128 px; the
               ImageNet backbone when it is in the torch cache, else random init: same cost)
               trained by ``methods.common.segmenter.train_segmenter`` for ``--steps`` steps on
               pairs streamed from the ``gan`` stage's generator (as ``GANSeg.fit`` does; random
               pairs if that stage did not run), ``amp=`` passed through.
``fid``        ``protocols.fid.generated_statistics`` (the FID protocols' generated side: TF-
               Inception features in chunks of 50 and the running mean/covariance) of
               ``--fid-images`` (5,000) random uint8 images at 128 px, the feature path under
               ``precision.Updater(amp).autocast()`` (FID scoring itself runs in fp32).
               Without the FID Inception weights the row is ``skipped: <why>``.

Each timed run follows ``--warmup`` untimed iterations (first-call allocations, cuDNN kernel
selection). Per row: status (``ran``, ``skipped: ...`` or ``failed: ...``), steps or images,
batch size, seconds, it/s (training stages), images/s and peak memory: on CUDA the peak
allocation of the timed run (``torch.cuda.max_memory_allocated``, reset before it), on a CPU the
process's peak resident memory so far (``ru_maxrss``, which cannot be reset). A number that was
not measured is printed as ``-`` and stored as null. ``--tiny``: the ``smoke`` preset (32 px,
tiny widths, its small UNet segmenter), 3 steps, 4 FID images at 32 px, 1 warm-up iteration:
checks the plumbing in seconds, its numbers say nothing about a GPU.

Exit codes: 0 every row ran or was skipped; 1 a stage failed (its traceback on stderr); 2 a
usage error (one line).
"""
from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import time
import traceback
from typing import Any, Callable

STAGES = ("gan", "segmenter", "fid")
AMP_MODES = ("off", "bf16", "fp16")
FULL = {"preset": "paper", "steps": 50, "gan_batch": 64, "fid_images": 5000, "fid_size": 128, "warmup": 2,
        "fid_warmup_images": 50}
TINY = {"preset": "smoke", "steps": 3, "gan_batch": None, "fid_images": 4, "fid_size": 32, "warmup": 1,
        "fid_warmup_images": 1}
SEED = 0
FULL_CHECK_BUDGET_S = 300  # the full check is meant to finish within 5 minutes on one GPU


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where everything runs (default auto: CUDA when present)")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke preset, 3 steps, 4 FID images at 32 px: seconds on a CPU (plumbing only)")
    parser.add_argument("--amp", default="off,bf16", metavar="MODES",
                        help="comma-separated amp modes to run each stage in (off, bf16, fp16; default off,bf16)")
    parser.add_argument("--stages", default=",".join(STAGES), metavar="STAGES",
                        help=f"comma-separated subset of {', '.join(STAGES)} (default: all)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed GAN and segmenter steps (default 50; --tiny 3)")
    parser.add_argument("--fid-images", type=int, default=None,
                        help="images through the FID feature path (default 5000; --tiny 4)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations before each timed run "
                                                                 "(default 2; --tiny 1)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a GANSeg config field (e.g. batch_size=32, segmenter.batch_size=32)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = the preset's / torch's)")
    parser.add_argument("--out", default=None, metavar="FILE", help="also write the report as JSON to FILE")


# ----------------------------------------------------------------------------- helpers

def _split_list(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    from segbench.benchmark.errors import UserError

    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad or not items:
        raise UserError(f"{flag} {text!r}: expected a comma-separated list of {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def environment(device: Any) -> dict[str, Any]:
    """torch, the device and its name, CUDA/cuDNN versions, the host."""
    import torch

    from segbench.methods.ganseg.throughput import device_name

    env = {"torch": torch.__version__, "device": str(device), "device_name": device_name(device),
           "python": platform.python_version(), "host_cpu": platform.processor() or platform.machine(),
           "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   capability=f"{props.major}.{props.minor}", gpu_memory_mb=round(props.total_memory / 2**20),
                   bf16_supported=bool(torch.cuda.is_bf16_supported()))
    return env


def _row(stage: str, amp: str, **fields: Any) -> dict[str, Any]:
    row = {"stage": stage, "amp": amp, "status": "ran", "steps": None, "images": None, "batch_size": None,
           "seconds": None, "it_s": None, "images_s": None, "peak_cuda_mb": None, "peak_rss_mb": None, "note": ""}
    row.update(fields)
    return row


def _memory(device: Any) -> dict[str, Any]:
    from segbench.methods.ganseg.throughput import memory_fields

    mem = memory_fields(device)
    return {"peak_rss_mb": mem["peak_rss_mib"], "peak_cuda_mb": mem.get("peak_cuda_mib")}


def _release(device: Any) -> None:
    """Hand cached CUDA blocks back between stages (nothing on a CPU)."""
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()


def _positive(value: Any) -> float | None:
    """A measured rate or time as a float, None when there is none."""
    return float(value) if value is not None and float(value) > 0 else None


class RandomSamples:
    """``sample(n, seed)``: n random uint8 images [n,3,size,size] from a generator seeded with
    ``seed``: the FID protocol's method interface without a model in it."""

    def __init__(self, size: int) -> None:
        self.size = size

    def sample(self, n: int, seed: int) -> Any:
        import torch

        g = torch.Generator().manual_seed(seed)
        return torch.randint(0, 256, (n, 3, self.size, self.size), dtype=torch.uint8, generator=g)


# ----------------------------------------------------------------------------- stages

@dataclasses.dataclass(frozen=True)
class Plan:
    config: Any  # GANSegConfig of the preset (+ --set)
    steps: int
    warmup: int
    fid_images: int
    fid_size: int
    fid_warmup_images: int
    threads: int


def gan_stage(plan: Plan, amp: str, device: Any, keep: dict[str, Any]) -> dict[str, Any]:
    from segbench.methods.common.runtime import torch_threads
    from segbench.methods.context import FitContext
    from segbench.methods.ganseg.throughput import RandomImages, reset_peak_memory
    from segbench.methods.ganseg.train import train_gan

    config = dataclasses.replace(plan.config, amp=amp, sample_every=0, checkpoint_every=0)
    images = RandomImages(max(4 * config.batch_size, 64), config.image_size)
    ctx = FitContext(seed=SEED, device=device, progress=False)  # no run folder: nothing is saved
    with torch_threads(plan.threads or config.num_threads):
        if plan.warmup:
            train_gan(dataclasses.replace(config, steps=plan.warmup, log_every=plan.warmup), images, ctx)
        reset_peak_memory(device)
        generator, info = train_gan(dataclasses.replace(config, steps=plan.steps, log_every=plan.steps), images, ctx)
        mem = _memory(device)
    keep["generator"] = generator
    images_s = info.get("gan_images_s")
    if images_s is None and info.get("gan_it_s"):
        images_s = info["gan_it_s"] * config.batch_size
    del images
    _release(device)
    return _row("gan", amp, steps=info["gan_steps_this_call"], batch_size=config.batch_size,
                seconds=_positive(info["gan_seconds"]), it_s=_positive(info["gan_it_s"]),
                images_s=_positive(images_s), **mem,
                note=f"GANSeg {config.image_size}px, G {info['generator_params']:,} / "
                     f"D {info['discriminator_params']:,} params, random images")


def segmenter_stage(plan: Plan, amp: str, device: Any, keep: dict[str, Any]) -> dict[str, Any]:
    from segbench.methods.common.pairs import FunctionPairSource
    from segbench.methods.common.runtime import torch_threads
    from segbench.methods.common.segmenter import train_segmenter
    from segbench.methods.ganseg.method import GANSeg
    from segbench.methods.ganseg.throughput import random_pair_source, reset_peak_memory

    config = plan.config
    seg = dataclasses.replace(config.segmenter, checkpoint_every=0)
    num_classes = config.num_parts + 1
    if keep.get("generator") is not None:  # the GAN stage's generator, frozen, as GANSeg.fit's stage 2
        method = GANSeg(dataclasses.replace(config, amp=amp))
        method.generator = keep["generator"].to(device).eval()
        source, pairs = FunctionPairSource(num_classes, method._pairs), "pairs from the gan stage's generator"
    else:
        source, pairs = random_pair_source(num_classes, config.image_size), "random pairs"
    with torch_threads(plan.threads or config.num_threads):
        if plan.warmup:
            train_segmenter(dataclasses.replace(seg, steps=plan.warmup, log_every=plan.warmup), source, seed=SEED,
                            progress=False, device=device, amp=amp)
        reset_peak_memory(device)
        model, info = train_segmenter(dataclasses.replace(seg, steps=plan.steps, log_every=plan.steps), source,
                                      seed=SEED, progress=False, device=device, amp=amp)
        mem = _memory(device)
    del model
    keep.pop("generator", None)
    _release(device)
    it_s = info.get("it_s")
    images_s = info.get("images_s") or (it_s * seg.batch_size if it_s else None)
    return _row("segmenter", amp, steps=info["steps_this_call"], batch_size=seg.batch_size,
                seconds=_positive(info["train_seconds"]), it_s=_positive(it_s), images_s=_positive(images_s),
                **mem, note=f"{seg.arch} {seg.image_size}px, backbone {info.get('backbone_weights')}, {pairs}")


def fid_stage(plan: Plan, amp: str, device: Any, keep: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from segbench import feature_nets
    from segbench.methods.common.precision import Updater
    from segbench.methods.common.runtime import torch_threads
    from segbench.methods.ganseg.throughput import reset_peak_memory
    from segbench.protocols.fid import SAMPLE_CHUNK, generated_statistics

    try:
        feature_nets.locate_inception_weights()
        feature_nets._extractor_class()  # torch-fidelity importable
    except (feature_nets.InceptionWeightsNotFoundError, ImportError) as exc:
        reason = str(exc).split(". ")[0].strip()[:120] or type(exc).__name__
        return _row("fid", amp, status=f"skipped: {reason}", note=" ".join(str(exc).split()))
    sampler = RandomSamples(plan.fid_size)
    updater = Updater(amp, device)
    with torch_threads(plan.threads):
        feature_nets.get_feature_extractor(device)  # built (weights converted) and moved, untimed
        if plan.fid_warmup_images:
            with updater.autocast():  # and warmed up, untimed
                feature_nets.inception_features(sampler.sample(plan.fid_warmup_images, seed=0),
                                                batch_size=SAMPLE_CHUNK, device=device)
        reset_peak_memory(device)
        t0 = time.perf_counter()
        with updater.autocast():
            mu, sigma = generated_statistics(sampler, plan.fid_images, batch_size=SAMPLE_CHUNK, progress=False,
                                             device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        mem = _memory(device)
    finite = bool(np.isfinite(mu).all() and np.isfinite(sigma).all())
    note = f"protocols.fid.generated_statistics, random {plan.fid_size}px uint8, chunks of {SAMPLE_CHUNK}"
    if not finite:
        return _row("fid", amp, status="failed: non-finite feature statistics", images=plan.fid_images, note=note)
    return _row("fid", amp, images=plan.fid_images, batch_size=min(SAMPLE_CHUNK, plan.fid_images),
                seconds=_positive(seconds), images_s=_positive(plan.fid_images / seconds), **mem, note=note)


STAGE_FUNCTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "gan": gan_stage, "segmenter": segmenter_stage, "fid": fid_stage}


# ----------------------------------------------------------------------------- report

def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    """The summary table: one line per (stage, amp); ``-`` where nothing was measured."""
    env = report["environment"]
    head = [f"gpu-check  torch {env['torch']}  device {env['device']} ({env['device_name']})"
            + (f"  CUDA {env['cuda']}  cuDNN {env['cudnn']}" if env.get("cuda") else "")
            + f"  {'tiny' if report['tiny'] else 'full'} ({report['preset']} preset"
            + "".join(f", {o}" for o in report["overrides"]) + f")  wall {report['wall_s']:.1f} s"]
    cols = ("stage", "amp", "steps/images", "batch", "seconds", "it/s", "images/s", "peak memory MiB", "status")
    lines = []
    for r in report["rows"]:
        if r["steps"] is not None:
            count = f"{r['steps']} step" + ("s" if r["steps"] != 1 else "")
        elif r["images"] is not None:
            count = f"{r['images']} img"
        else:
            count = "-"
        if r["peak_cuda_mb"] is not None:
            mem = f"{r['peak_cuda_mb']:,.0f} (cuda)"
        elif r["peak_rss_mb"] is not None:
            mem = f"{r['peak_rss_mb']:,.0f} (rss)"
        else:
            mem = "-"
        lines.append((r["stage"], r["amp"], count, _fmt(r["batch_size"]), _fmt(r["seconds"]), _fmt(r["it_s"]),
                      _fmt(r["images_s"], 1), mem, r["status"]))
    widths = [max(len(c), *(len(line[i]) for line in lines)) if lines else len(c) for i, c in enumerate(cols)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        (c.ljust(w) if i in (0, 1, 8) else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = head + [fmt(cols), fmt(tuple("-" * w for w in widths))] + [fmt(line) for line in lines]
    notes = [f"  {r['stage']}/{r['amp']}: {r['note']}" for r in report["rows"] if r["note"]]
    if notes:
        out += ["notes:"] + notes
    if not report["tiny"] and report["wall_s"] > FULL_CHECK_BUDGET_S:
        out.append(f"note: the check took {report['wall_s']:.0f} s, over its {FULL_CHECK_BUDGET_S} s target")
    if report["environment"]["device"] == "cpu":
        out.append("peak memory on a CPU: the process's peak resident set so far (ru_maxrss), not per stage")
    return "\n".join(out)


def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """Run the stages and return the report (``environment``, ``rows``, ...)."""
    import torch

    from segbench.benchmark.config import parse_set_args
    from segbench.benchmark.errors import UserError
    from segbench.methods.context import resolve_device
    from segbench.methods.ganseg.method import GANSeg

    amps = _split_list(args.amp, AMP_MODES, "--amp")
    stages = sorted(_split_list(args.stages, STAGES, "--stages"), key=STAGES.index)  # gan feeds segmenter
    device = resolve_device(args.device)
    if device.type == "cpu" and not args.tiny and args.device == "auto":
        raise UserError("no CUDA device here: the full check (paper preset, batch 64, 5,000 FID images) is sized "
                        "for a GPU; add --tiny for a CPU plumbing run, or --device cpu to run it on the CPU anyway")
    sizes = TINY if args.tiny else FULL
    steps = sizes["steps"] if args.steps is None else args.steps
    warmup = sizes["warmup"] if args.warmup is None else args.warmup
    fid_images = sizes["fid_images"] if args.fid_images is None else args.fid_images
    if steps < 1 or warmup < 0 or fid_images < 2 or args.threads < 0:
        raise UserError("--steps must be >= 1, --warmup >= 0, --fid-images >= 2 and --threads >= 0")
    overrides = dict({"batch_size": str(sizes["gan_batch"])} if sizes["gan_batch"] else {})
    overrides.update(parse_set_args(args.set))
    config = GANSeg.config_for(sizes["preset"], overrides)
    plan = Plan(config=config, steps=steps, warmup=warmup, fid_images=fid_images, fid_size=sizes["fid_size"],
                fid_warmup_images=sizes["fid_warmup_images"] if warmup else 0, threads=args.threads)
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(device)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for amp in amps:
        keep: dict[str, Any] = {}
        for stage in stages:
            if amp == "bf16" and device.type == "cuda" and not env.get("bf16_supported", True):
                rows.append(_row(stage, amp, status="skipped: this GPU does not support bf16"))
                continue
            t_stage = time.perf_counter()
            try:
                rows.append(STAGE_FUNCTIONS[stage](plan, amp, device, keep))
            except (KeyboardInterrupt, UserError):
                raise
            except Exception as exc:  # a stage that fails (e.g. out of memory) is reported, the rest runs
                print(f"gpu-check: {stage} ({amp}) failed:", file=sys.stderr)
                traceback.print_exc(file=sys.stderr)
                rows.append(_row(stage, amp, status=f"failed: {_one_line(exc)}"))
                keep.pop("generator", None)
                _release(device)
            rows[-1]["stage_wall_s"] = round(time.perf_counter() - t_stage, 2)  # set-up and warm-up included
        keep.clear()
    order = {s: i for i, s in enumerate(STAGES)}
    rows.sort(key=lambda r: (order[r["stage"]], amps.index(r["amp"])))
    return {"environment": env, "tiny": bool(args.tiny), "preset": sizes["preset"], "amp_modes": amps,
            "stages": stages, "steps": steps, "warmup": warmup, "fid_images": fid_images,
            "overrides": list(args.set), "wall_s": round(time.perf_counter() - t_start, 2),
            "argv": list(getattr(args, "argv", None) or sys.argv[1:]),
            "rows": rows}


def run_from_args(args: argparse.Namespace) -> int:
    """Run, print the table, write ``--out``; the exit code (0, or 1 when a stage failed).
    A user error propagates (``UserError``)."""
    from pathlib import Path

    from segbench.benchmark.errors import UserError, check_out_folder
    from segbench.methods.context import write_json_atomic

    if args.out:  # checked before minutes of measuring
        if Path(args.out).is_dir():
            raise UserError(f"--out {args.out}: is a folder; give a file name (e.g. runs/gpu_check.json)")
        check_out_folder(str(Path(args.out).parent), "--out")
    report = run_check(args)
    print(format_table(report), flush=True)
    if args.out:
        write_json_atomic(args.out, report)
        print(f"wrote {args.out}")
    return 1 if any(r["status"].startswith("failed") for r in report["rows"]) else 0


def main(argv: list[str] | None = None) -> int:
    from segbench.benchmark.errors import UserError, one_line

    parser = argparse.ArgumentParser(prog="python -m segbench.benchmark.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return run_from_args(args)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
