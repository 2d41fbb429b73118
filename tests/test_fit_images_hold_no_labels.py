"""No label is reachable from a fit view, structurally: walking everything a ``FitImages`` object
holds (instance attributes, closures, bound methods' ``__self__``, ``functools.partial``
arguments, containers) finds no Split, Dataset or annotation, only paths, numbers and image
pixels. Also: the fit views give the split's own pixels, and the guard refuses a loader that is
a bound method of, or a closure over, a split."""
import functools
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from segbench.datasets.base import Dataset, FitImages, Split
from segbench.datasets.realformat import Members
from tests.conftest import SHARED_DATA
from tests.fixtures import celeba as fx_celeba
from tests.fixtures import cub as fx_cub
from tests.fixtures import flowers as fx_flowers
from tests.fixtures import taichi as fx_taichi

# The fixtures' split sizes differ from the documented ones: the count warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
LEAVES = (str, bytes, int, float, bool, complex, type(None), Path, torch.Tensor, type, types.ModuleType)


def reachable(root):
    """(object, path) for everything reachable from ``root``. Not walked: classes, modules and
    functions' globals (code, not data the view holds)."""
    seen, stack, out = set(), [(root, "fit")], []
    while stack:
        obj, path = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        out.append((obj, path))
        if isinstance(obj, LEAVES) or isinstance(obj, np.ndarray):
            continue
        children = []
        if isinstance(obj, functools.partial):
            children += [(obj.func, ".func")] + [(a, f".args[{i}]") for i, a in enumerate(obj.args)]
            children += [(v, f".keywords[{k}]") for k, v in obj.keywords.items()]
        if isinstance(obj, dict):
            children += [(v, f"[{k!r}]") for k, v in obj.items()] + [(k, "<key>") for k in obj]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children += [(v, f"[{i}]") for i, v in enumerate(obj)]
        for name in ("__self__", "__func__", "__wrapped__"):
            if hasattr(obj, name):
                children.append((getattr(obj, name), f".{name}"))
        for i, cell in enumerate(getattr(obj, "__closure__", None) or ()):
            children.append((cell.cell_contents, f".<closure {i}>"))
        for name in ("__defaults__", "__kwdefaults__"):
            if getattr(obj, name, None):
                children.append((getattr(obj, name), f".{name}"))
        children += [(v, f".{k}") for k, v in getattr(obj, "__dict__", {}).items()]
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                children.append((getattr(obj, slot), f".{slot}"))
        stack += [(child, path + suffix) for child, suffix in children]
    return out


def label_leaks(fit):
    leaks = []
    for obj, path in reachable(fit):
        if isinstance(obj, (Split, Dataset, Members)):
            leaks.append(f"{path}: a {type(obj).__name__}")
        elif not isinstance(obj, LEAVES) and any(hasattr(obj, a) for a in ("annotation", "annotate")):
            leaks.append(f"{path}: {type(obj).__name__} with an annotation accessor")
        elif isinstance(obj, np.ndarray) and not (obj.dtype == np.uint8 and obj.ndim == 4 and obj.shape[-1] == 3):
            leaks.append(f"{path}: an array {obj.dtype} {obj.shape} that is not a stack of images")
    return leaks


def _check(split, fit_length=None):
    fit = split.fit_images()
    assert isinstance(fit, FitImages)
    assert label_leaks(fit) == []
    assert len(fit) == (fit_length or len(split))
    item = fit[0]
    assert item.dtype == torch.float32 and item.shape[0] == 3 and 0 <= item.min() and item.max() <= 1
    return fit


def test_the_walker_finds_a_leak_when_there_is_one():
    from segbench.datasets.synthetic_parts import SyntheticParts
    split = SyntheticParts(image_size=16, n_train=3).split("train")
    sneaky = FitImages(3, functools.partial(lambda holder, i: holder[0].image(i), [split]))  # one level down
    assert any("SyntheticPartsSplit" in leak for leak in label_leaks(sneaky))


def test_the_guard_refuses_a_bound_method_or_closure_over_a_split():
    from segbench.datasets.synthetic_parts import SyntheticParts
    split = SyntheticParts(image_size=16, n_train=3).split("train")
    with pytest.raises(TypeError, match="must not hold a Split or Dataset"):
        FitImages(3, split.image)
    with pytest.raises(TypeError, match="must not hold a Split or Dataset"):
        FitImages(3, lambda i: split.image(i))


def test_synthetic_parts_fit_view_holds_render_parameters_only():
    from segbench.datasets.synthetic_parts import SyntheticParts
    split = SyntheticParts(image_size=32, n_train=5).split("train", limit=4)
    fit = _check(split)
    for i in range(4):
        np.testing.assert_array_equal((fit[i] * 255).round().byte().permute(1, 2, 0).numpy(), split.image(i))


@pytest.mark.parametrize("augment", ["none", "ganseg"])
@pytest.mark.parametrize("prepared", [False, True])
def test_cub_and_flowers_fit_views(tmp_path, augment, prepared):
    from segbench.datasets.cub import CUB
    from segbench.datasets.flowers import Flowers
    for make, cls in ((fx_cub.make_cub, CUB), (fx_flowers.make_flowers, Flowers)):
        data = cls(make(tmp_path / cls.__name__), image_size=16, augment=augment)
        if prepared:  # the fit view then holds the cache's memory-mapped pixels
            data.prepare(["train"])
        split = data.split("train")
        assert (split.cached is not None) == prepared
        fit = _check(split, 3 * len(split) if augment == "ganseg" else None)
        if augment == "ganseg":  # what GANSeg's RealImages reads: the un-augmented image, then a draw
            assert fit.base_length == len(split) and callable(fit.augment)
            np.testing.assert_array_equal((fit.base_image(1) * 255).round().byte().permute(1, 2, 0).numpy(),
                                          split.image(1))
        else:
            np.testing.assert_array_equal((fit[1] * 255).round().byte().permute(1, 2, 0).numpy(), split.image(1))


def test_taichi_and_celeba_fit_views_mirrored_or_not(tmp_path):
    from segbench.datasets.celeba import CelebAAligned, CelebAWild
    from segbench.datasets.taichi import Taichi
    _check(Taichi(fx_taichi.make_taichi(tmp_path / "taichi"), augment="ganseg").split("train"))
    root = fx_celeba.make_celeba(tmp_path / "celeba")
    for data in (CelebAWild(root), CelebAAligned(root)):
        _check(data.split("train"))
    mirrored = CelebAWild(root, fit_mirror=True).split("train")
    fit = _check(mirrored, 2 * len(mirrored))
    np.testing.assert_array_equal(fit[len(mirrored)].numpy(), fit[0].flip(-1).numpy())


@pytest.mark.skipif(not (SHARED_DATA / "faces_wild68").exists() or not (SHARED_DATA / "pascal_s").exists()
                    or not (SHARED_DATA / "cub_birds_5902").exists(), reason="real data not found (../shared/data)")
def test_real_image_file_fit_views():
    from segbench.datasets.cub_photos import CubPhotos
    from segbench.datasets.faces_wild import FacesWild
    from segbench.datasets.pascal_s import PascalS
    for split in (FacesWild(SHARED_DATA).split("fit"), PascalS(SHARED_DATA).split("all"),
                  CubPhotos(SHARED_DATA).split("all", limit=50)):
        fit = _check(split)
        np.testing.assert_array_equal((fit[3] * 255).round().byte().permute(1, 2, 0).numpy(), split.image(3))
