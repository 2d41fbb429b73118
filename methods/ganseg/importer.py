"""Import the authors' released GANSeg checkpoints (``python -m benchmark import-checkpoint ganseg``).

The GAN file (``{'generator', 'discriminator', ...}``) gives the generator, converted and loaded
strictly; its configuration is read from the weights and from the run's ``parameters.json``
(``log/gan_<class>_k<K>/parameters.json``, found two folders above the checkpoint, or given).
The segmenter file (``{'detector', ...}``), when given, gives the DeepLabV3-ResNet50 that
``predict`` uses; without it the segmenter is trained on the imported generator's pairs with the
preset's segmenter settings (GANSeg's second stage), so a GAN-only release can still be scored.
Every mismatch is one ``OfficialFormatError`` line naming the official key or file.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from segbench.benchmark.records import file_digest
from segbench.methods.ganseg.config import GANSegConfig, validate
from segbench.methods.ganseg.discriminator import Discriminator
from segbench.methods.ganseg.generator import GANSegGenerator
from segbench.methods.ganseg.official import (OfficialFormatError, convert_discriminator, convert_generator,
                                     convert_segmenter, discriminator_channels, infer_config, load_converted,
                                     official_generator_key)


def read_official_file(path: Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise OfficialFormatError(f"{what} checkpoint {path} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt file or one that needs arbitrary code to unpickle
        raise OfficialFormatError(f"{path}: not a readable {what} checkpoint (torch.load with weights_only=True "
                                  f"failed: {type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise OfficialFormatError(f"{path}: expected a dict checkpoint, got {type(data).__name__}")
    return data


def read_parameters(checkpoint: Path, given: Path | None) -> tuple[dict[str, Any], str | None]:
    """The run's parameters.json: ``given``, else ``<log dir>/parameters.json`` two folders above
    ``checkpoints/epoch_<e>.model``; ({}, None) when there is none. A golden ``*_args.json``
    (``generator_hyper_paras``) is accepted too."""
    path = Path(given) if given else Path(checkpoint).resolve().parent.parent / "parameters.json"
    if not path.is_file():
        if given:
            raise OfficialFormatError(f"parameters file {path} not found")
        return {}, None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OfficialFormatError(f"{path}: not a JSON parameters file ({exc})") from None
    return dict(data.get("generator_hyper_paras", data)), str(path)


def _section(data: Mapping[str, Any], key: str, path: Path) -> Mapping[str, torch.Tensor]:
    if key not in data:
        hint = " (this is a segmenter checkpoint: pass it with --segmenter and the GAN file as PATH)" \
            if key == "generator" and "detector" in data else ""
        raise OfficialFormatError(f"{path}: no {key!r} entry; found {sorted(data)}{hint}")
    section = data[key]
    if not isinstance(section, Mapping) or not all(isinstance(v, torch.Tensor) for v in section.values()):
        raise OfficialFormatError(f"{path}: {key!r} is not a state_dict of tensors")
    return section


def import_official(gan_path: Path, base: GANSegConfig, *, segmenter_path: Path | None = None,
                    parameters_path: Path | None = None) -> tuple[GANSegConfig, GANSegGenerator,
                                                                 torch.nn.Module | None, dict[str, Any]]:
    """(config, generator in eval mode, segmenter or None, provenance) from official files."""
    from segbench.methods.common.segmenter import build_segmenter

    gan_path = Path(gan_path)
    data = read_official_file(gan_path, "GAN")
    g_state = _section(data, "generator", gan_path)
    params, params_file = read_parameters(gan_path, parameters_path)
    config = infer_config(g_state, base, params)
    validate(config)
    info: dict[str, Any] = {"gan_checkpoint": str(gan_path.resolve()), "gan_sha256": file_digest(gan_path),
                            "parameters_file": params_file, "parameters": params}
    generator = GANSegGenerator(config.generator, config.num_parts, config.n_per)
    depths = config.generator.mlp_depths
    load_converted(generator, convert_generator(g_state), "generator",
                   lambda key: official_generator_key(key, depths))
    if "discriminator" in data:  # not needed to score; checked so a damaged file is caught here
        d_state = _section(data, "discriminator", gan_path)
        channels, hidden = discriminator_channels(d_state)
        d_config = dataclasses.replace(config.discriminator, channels=channels, fc_hidden=hidden)
        config = dataclasses.replace(config, discriminator=d_config)
        load_converted(Discriminator(d_config, config.image_size), convert_discriminator(d_state), "discriminator")
        info["discriminator_params"] = sum(v.numel() for k, v in d_state.items())
    segmenter = None
    if segmenter_path is not None:
        segmenter_path = Path(segmenter_path)
        seg_state = _section(read_official_file(segmenter_path, "segmenter"), "detector", segmenter_path)
        seg_params, _ = read_parameters(segmenter_path, None)
        seg_config = dataclasses.replace(config.segmenter, arch="deeplabv3_resnet50", pretrained_backbone="none",
                                         image_size=int(seg_params.get("image_size", 128)))
        config = dataclasses.replace(config, segmenter=seg_config)
        segmenter, _ = build_segmenter(seg_config, config.num_parts + 1, load_pretrained=False)
        load_converted(segmenter, convert_segmenter(seg_state), "segmenter")
        segmenter.eval()
        info.update(segmenter_checkpoint=str(segmenter_path.resolve()), segmenter_sha256=file_digest(segmenter_path))
    return config, generator.eval(), segmenter, info
