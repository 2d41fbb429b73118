"""Bad local data is refused with one line naming the file (or converted correctly): images that are
not 8-bit RGB, masks whose size differs from their image, manifests with truncated or non-numeric
rows, too few rows, and paths that leave the data folder. Tiny generated files in tmp_path."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segbench.benchmark.errors import UserError
from segbench.datasets.image_files import decode_rgb
from segbench.datasets.list_files import DataFormatError
from segbench.datasets.realformat import CountMismatchWarning
from tests.fixtures.common import save_image, write_lines


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# ----------------------------------------------------------------------------- pixel formats

def _png16_rgb(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one): raw IHDR/IDAT chunks."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


GRADIENT16 = np.linspace(0, 65535, 8 * 16).reshape(8, 16).astype(np.uint16)


def _scaled(values16: np.ndarray) -> np.ndarray:
    return ((values16.astype(np.int64) * 255 + 32767) // 65535).astype(np.uint8)


def test_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path):
    path = tmp_path / "g16.png"
    Image.fromarray(GRADIENT16).save(path)
    assert Image.open(path).mode.startswith("I")
    image = decode_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (8, 16, 3)
    assert np.array_equal(image[..., 0], _scaled(GRADIENT16)) and np.array_equal(image[..., 0], image[..., 2])
    assert image.min() == 0 and image.max() == 255 and 120 < image.mean() < 135  # not all white
    Image.fromarray(GRADIENT16).save(tmp_path / "g16.tif")  # 16-bit TIFF alike
    assert np.array_equal(decode_rgb(tmp_path / "g16.tif"), image)


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    rgb = np.stack([GRADIENT16, GRADIENT16 // 2, 65535 - GRADIENT16], axis=-1)
    image = decode_rgb(_png16_rgb(tmp_path / "rgb16.png", rgb))
    assert image.shape == (8, 16, 3)
    assert np.abs(image.astype(int) - rgb / 257).max() <= 1


@pytest.mark.parametrize("values,fragment", [
    (np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), "a floating-point image (mode F)"),
    (np.full((8, 8), 70000, np.int32), "outside 16 bits"),
])
def test_float_and_32_bit_images_are_refused_naming_the_file(tmp_path, values, fragment):
    path = tmp_path / "odd.tif"
    Image.fromarray(values).save(path)
    with pytest.raises(DataFormatError) as info:
        decode_rgb(path)
    assert str(path) in _one_line(info) and fragment in str(info.value)


@pytest.mark.parametrize("mode,suffix", [("P", ".png"), ("LA", ".png"), ("RGBA", ".png"), ("L", ".png"),
                                         ("1", ".png"), ("CMYK", ".jpg"), ("CMYK", ".tif")])
def test_8_bit_modes_convert_to_rgb(tmp_path, mode, suffix):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (200, 40, 10)
    rgb[:, 4:] = (10, 90, 250)
    source = Image.fromarray(rgb)
    stored = source.quantize(4) if mode == "P" else source.convert(mode)  # an exact 4-colour palette
    path = tmp_path / f"x_{mode}{suffix}"
    stored.save(path, **({"quality": 100} if suffix == ".jpg" else {}))
    image = decode_rgb(path)
    assert image.dtype == np.uint8 and image.shape == (8, 8, 3)
    expected = np.asarray(Image.open(path).convert("RGB"))  # PIL's own 8-bit conversion
    assert np.array_equal(image, expected)
    if mode in ("P", "RGBA"):
        assert np.array_equal(image, rgb)
    if mode in ("LA", "L"):
        assert np.array_equal(image[..., 0], np.asarray(source.convert("L")))


# ----------------------------------------------------------------------------- pascal_s

def _pascal(root: Path, n: int = 3, *, mask_sizes: dict[int, tuple[int, int]] | None = None) -> Path:
    base = root / "pascal_s"
    rows = ["id,image,mask,width,height"]
    for i in range(1, n + 1):
        h, w = 12, 16
        save_image(base / "images" / f"{i}.jpg", h, w, seed=i)
        mh, mw = (mask_sizes or {}).get(i, (h, w))
        mask = np.zeros((mh, mw), np.uint8)
        mask[2:8, 3:10] = 255
        (base / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(base / "masks" / f"{i}.png")
        rows.append(f"{i},images/{i}.jpg,masks/{i}.png,{w},{h}")
    write_lines(base / "manifest.csv", rows)
    return base


def test_pascal_s_with_too_few_rows_warns_with_both_counts(tmp_path):
    from segbench.datasets.pascal_s import PascalS

    _pascal(tmp_path)
    with pytest.warns(CountMismatchWarning, match=r"pascal_s split 'all' .*manifest\.csv\): found 3 images, the "
                                                  r"documented size is 850"):
        split = PascalS(tmp_path).split("all")
    assert len(split) == 3 and split.annotation(0)["fg_mask_full"].shape == (12, 16)


@pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
def test_pascal_s_mask_of_another_size_is_refused_naming_both_files(tmp_path):
    from segbench.datasets.pascal_s import PascalS

    base = _pascal(tmp_path, mask_sizes={2: (12, 15)})
    split = PascalS(tmp_path).split("all")
    split.annotation(0)
    with pytest.raises(DataFormatError) as info:
        split.annotation(1)
    line = _one_line(info)
    assert str(base / "masks" / "2.png") in line and str(base / "images" / "2.jpg") in line
    assert "12x15 (HxW)" in line and "is 12x16" in line


def test_pascal_s_16_bit_mask_is_thresholded_on_its_scale(tmp_path):
    from segbench.datasets.pascal_s import binary_mask

    values = np.array([[0, 20000, 32896, 40000, 65535]], np.uint16)  # 32896 = 128 * 257
    Image.fromarray(values).save(tmp_path / "m16.png")
    assert binary_mask(tmp_path / "m16.png").tolist() == [[False, False, True, True, True]]
    Image.fromarray(np.ones((2, 2), np.float32)).save(tmp_path / "mf.tif")
    with pytest.raises(DataFormatError, match="mf.tif: a floating-point image"):
        binary_mask(tmp_path / "mf.tif")


@pytest.mark.parametrize("edit,fragment", [
    (lambda rows: rows[:-1] + ["3,images/3.jpg,masks/3.pn"], "manifest.csv:4: expected 5 fields, got 3"),
    (lambda rows: rows + ["4,images/4.jpg"], "manifest.csv:5: expected 5 fields, got 2"),
    (lambda rows: rows[:2] + ["2,images/2.jpg,masks/2.png,sixteen,12"] + rows[3:],
     "manifest.csv:3: column width is 'sixteen', not a finite number"),
    (lambda rows: rows[:2] + ["2,/etc/hostname,masks/2.png,16,12"] + rows[3:],
     "manifest.csv:3 (column image): path '/etc/hostname' is not inside the dataset folder"),
    (lambda rows: rows[:3] + ["3,images/3.jpg,../../secret.png,16,12"],
     "manifest.csv:4 (column mask): path '../../secret.png' is not inside the dataset folder"),
    (lambda rows: ["id,image,width,height"] + rows[1:], "manifest.csv: no column mask in its header"),
])
def test_pascal_s_manifest_problems_name_the_manifest_and_row(tmp_path, edit, fragment):
    from segbench.datasets.pascal_s import PascalS

    base = _pascal(tmp_path)
    rows = (base / "manifest.csv").read_text().splitlines()
    (base / "manifest.csv").write_text("\n".join(edit(rows)))  # no final newline: a cut download
    with pytest.raises(DataFormatError) as info:
        PascalS(tmp_path)
    assert fragment in _one_line(info) and str(base / "manifest.csv") in str(info.value)


# ----------------------------------------------------------------------------- faces_wild

FACE_HEADER = ("split,file,width,height,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,"
               "leftmouth_x,leftmouth_y,rightmouth_x,rightmouth_y")


def _faces(root: Path, names=("Ann_Smith_01", "Bob_Jones_02", "Cy_Young_03")) -> Path:
    base = root / "faces_wild68"
    rows = [FACE_HEADER]
    for i, name in enumerate(names):
        save_image(base / "images" / "train" / f"{name}.jpg", 24, 20, seed=i)
        rows.append(f"train,images/train/{name}.jpg,20,24,6,8,14,8,10,12,7,17,13,17")
    write_lines(base / "landmarks5.csv", rows)
    return base


@pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
def test_faces_wild_tiny_copy_loads_and_scales_landmarks(tmp_path):
    from segbench.datasets.faces_wild import FacesWild

    _faces(tmp_path)
    data = FacesWild(tmp_path, image_size=40)
    split = data.split("fit") if len(data.split("fit")) else data.split("test")
    assert split.annotation(0)["landmarks"][0].tolist() == [12.0, pytest.approx(40 * 8 / 24)]


def test_faces_wild_counts_warn(tmp_path):
    from segbench.datasets.faces_wild import FacesWild

    _faces(tmp_path)
    data = FacesWild(tmp_path)
    with pytest.warns(CountMismatchWarning, match=r"faces_wild split 'fit' \(landmarks5\.csv\): found \d images, "
                                                  r"the documented size is 2,820"):
        data.split("fit")


@pytest.mark.parametrize("edit,fragment", [
    (lambda text: text.rstrip("\n")[:-9], "landmarks5.csv:4: expected 14 fields, got 11"),  # truncated download
    (lambda text: text.replace(",6,8,14,8,", ",6,8,fourteen,8,", 1),
     "landmarks5.csv:2: column righteye_x is 'fourteen', not a finite number"),
    (lambda text: text.replace(",6,8,14,8,", ",6,8,nan,8,", 1), "landmarks5.csv:2: column righteye_x is 'nan'"),
    (lambda text: text.replace(",6,8,14,8,", ",6,8,,8,", 1), "landmarks5.csv:2: column righteye_x is ''"),
    (lambda text: text.replace("images/train/Bob_Jones_02.jpg", "../../Bob.jpg"),
     "landmarks5.csv:3 (column file): path '../../Bob.jpg' is not inside"),
    (lambda text: text.replace("images/train/Bob_Jones_02.jpg", "/tmp/Bob.jpg"),
     "landmarks5.csv:3 (column file): path '/tmp/Bob.jpg' is not inside"),
    (lambda text: text.replace(",20,24,", ",0,24,", 1), "landmarks5.csv:2: width and height must be > 0"),
])
def test_faces_wild_bad_landmark_file_names_the_file_and_line(tmp_path, edit, fragment):
    from segbench.datasets.faces_wild import FacesWild

    path = _faces(tmp_path) / "landmarks5.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(DataFormatError) as info:
        FacesWild(tmp_path)
    assert fragment in _one_line(info) and str(path) in str(info.value)


@pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
def test_faces_wild_image_of_another_size_than_listed_is_refused(tmp_path):
    from segbench.datasets.faces_wild import FacesWild

    base = _faces(tmp_path)
    data = FacesWild(tmp_path)
    split = data.split("fit") if len(data.split("fit")) else data.split("test")
    save_image(split.paths[0], 30, 20, seed=0)
    with pytest.raises(DataFormatError) as info:
        split.annotation(0)
    assert str(split.paths[0]) in _one_line(info) and str(base / "landmarks5.csv") in str(info.value)
    assert "mis-scaled" in str(info.value)


# ----------------------------------------------------------------------------- cub_photos and list files

def _cub_photos(root: Path) -> Path:
    base = root / "cub_birds_5902"
    for i in range(3):
        save_image(base / "images" / "Albatross" / f"{i:04d}.jpg", 10, 10, seed=i)
    write_lines(base / "images.txt", [f"{i}, Albatross/{i:04d}.jpg" for i in range(3)])
    write_lines(base / "train_test_split.txt", ["0, 1", "1, 0", "2, 1"])
    return base


def test_cub_photos_counts_warn_and_bad_lists_name_file_and_line(tmp_path):
    from segbench.datasets.cub_photos import CubPhotos

    base = _cub_photos(tmp_path)
    with pytest.warns(CountMismatchWarning, match="cub_photos split 'train': found 2 images, the documented size "
                                                  "is 2,903"):
        assert len(CubPhotos(tmp_path).split("train")) == 2
    write_lines(base / "images.txt", ["0, Albatross/0000.jpg", "1, ../../etc/passwd"])
    with pytest.raises(UserError, match=r"images\.txt:2: path '\.\./\.\./etc/passwd' is not inside"):
        CubPhotos(tmp_path)
    write_lines(base / "images.txt", [f"{i}, Albatross/{i:04d}.jpg" for i in range(3)])
    write_lines(base / "train_test_split.txt", ["0, 1", "1, 0"])
    with pytest.raises(UserError, match=r"train_test_split\.txt has no flag for image 2"):
        CubPhotos(tmp_path)
    write_lines(base / "train_test_split.txt", ["0, 1", "1, 0", "2, yes"])
    with pytest.raises(UserError, match=r"flag 'yes' for image 2"):
        CubPhotos(tmp_path)


def test_official_list_files_refuse_paths_outside_the_folder(tmp_path):
    from segbench.datasets.cub import read_images_txt
    from segbench.datasets.list_files import read_name_list, read_table

    write_lines(tmp_path / "images.txt", ["1 a/b.jpg", "2 /abs/c.jpg"])
    with pytest.raises(DataFormatError, match=r"images\.txt:2: path '/abs/c\.jpg' is not inside"):
        read_images_txt(tmp_path / "images.txt")
    write_lines(tmp_path / "testing.txt", ["000001.jpg", "../000002.jpg"])
    with pytest.raises(DataFormatError, match=r"testing\.txt \(entry 2\): path '\.\./000002\.jpg'"):
        read_name_list(tmp_path / "testing.txt")
    write_lines(tmp_path / "landmarks.txt", ["000001.jpg 1 2", "..\\000002.jpg 3 4"])
    with pytest.raises(DataFormatError, match=r"landmarks\.txt \(entry 2\)"):
        read_table(tmp_path / "landmarks.txt", 2)
    assert read_name_list(write_lines(tmp_path / "ok.txt", ["a..b.jpg", "dir/x.jpg"])) == ["a..b.jpg", "dir/x.jpg"]


def test_taichi_pickle_names_stay_inside(tmp_path):
    from segbench.datasets.taichi import read_keypoint_pickle
    from tests.fixtures.taichi import write_pickle

    write_pickle(tmp_path / "gt.pkl", ["a.png", "../b.png"], [np.zeros((18, 2))] * 2)
    with pytest.raises(DataFormatError, match=r"gt\.pkl: row 1 file_name: path '\.\./b\.png' is not inside"):
        read_keypoint_pickle(tmp_path / "gt.pkl")


# ----------------------------------------------------------------------------- masks of the official layouts

@pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
def test_cub_resized_mask_of_another_size_is_refused_too(tmp_path):
    """Not only the full-resolution views: the resized ``fg_mask`` would otherwise stretch it."""
    from segbench.datasets.cub import CUB
    from tests.fixtures.cub import make_cub, relpath

    root = make_cub(tmp_path / "CUB_200_2011")
    mask = root / "segmentations" / relpath(10).replace(".jpg", ".png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(mask)
    split = CUB(tmp_path, image_size=16).split("test")
    split.annotation(0)
    with pytest.raises(DataFormatError) as info:
        split.annotation(1)
    assert str(mask) in _one_line(info) and str(root / "images" / relpath(10)) in str(info.value)


@pytest.mark.filterwarnings("ignore::segbench.datasets.realformat.CountMismatchWarning")
def test_cub_16_bit_mask_and_image_are_read_on_their_scale(tmp_path):
    from segbench.datasets.cub import CUB
    from tests.fixtures.cub import MASK_FOREGROUND_9, make_cub, mask_array, relpath

    root = make_cub(tmp_path / "CUB_200_2011")
    mask = root / "segmentations" / relpath(9).replace(".jpg", ".png")
    Image.fromarray(mask_array(9).astype(np.uint16) * 257).save(mask)  # the same mask, 16 bits
    assert Image.open(mask).mode.startswith("I")
    split = CUB(tmp_path, image_size=16).split("test")
    fg = split.annotation(0)["fg_mask"]
    assert sorted(map(tuple, np.argwhere(fg).tolist())) == MASK_FOREGROUND_9
