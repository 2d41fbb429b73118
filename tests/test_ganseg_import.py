"""``import-checkpoint ganseg``: official-format files (written here from the golden official
state) become a run directory that ``eval`` scores; broken files give one line naming the key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segbench.benchmark.cli import main
from segbench.methods.common.segmenter import SegmenterConfig, build_segmenter
from segbench.methods.ganseg.importer import import_official
from segbench.methods.ganseg.method import GANSeg

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "ganseg"
pytestmark = [pytest.mark.skipif(not GOLDEN.is_dir(), reason=f"golden tensors not found at {GOLDEN}"),
              pytest.mark.usefixtures("one_thread")]


def official_gan_file(root: Path, name: str = "celeba_small", edit=None) -> Path:
    """log/gan_<name>/checkpoints/epoch_30.model + log/gan_<name>/parameters.json, as released."""
    log_dir = root / "log" / f"gan_{name}"
    (log_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    state = {"generator": torch.load(GOLDEN / f"{name}_generator_state.pt", weights_only=True),
             "discriminator": torch.load(GOLDEN / f"{name}_discriminator_state.pt", weights_only=True),
             "optim_gen": {}, "optim_disc": {}}
    if edit:
        edit(state)
    path = log_dir / "checkpoints" / "epoch_30.model"
    torch.save(state, path)
    args = json.loads((GOLDEN / f"{name}_args.json").read_text())["generator_hyper_paras"]
    (log_dir / "parameters.json").write_text(json.dumps(args))
    return path


def test_import_then_eval_scores_the_run(tmp_path, cli):
    path = official_gan_file(tmp_path)
    out = tmp_path / "runs"
    res = cli("import-checkpoint", "ganseg", str(path), "--protocol", "synthetic_parts", "--preset", "smoke",
              "--out", str(out), "--no-progress")
    assert res.returncode == 0, res.stderr
    run_dir = Path(res.stdout.split("run directory: ")[1].split()[0])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["imported_from"]["parameters_file"].endswith("parameters.json")
    assert config["method_config"]["generator"]["resolutions"] == [8, 8, 16, 32]  # from parameters.json
    assert config["method_config"]["generator"]["channels"] == [16, 12, 10, 6]  # from the weights
    assert len(config["imported_from"]["gan_sha256"]) == 64
    res = cli("eval", str(run_dir), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "landmark_err_no_intercept_pct" in res.stdout and "fg_iou_per_image_mean" in res.stdout
    records = json.loads((run_dir / "metrics_rescored.json").read_text())
    assert {r["metric"] for r in records} >= {"landmark_err_no_intercept_pct", "part_miou_hungarian"}


def _drop(key):
    return lambda state: state["generator"].pop(key)


def _rename(key, new):
    return lambda state: state["generator"].__setitem__(new, state["generator"].pop(key))


@pytest.mark.parametrize("edit, message", [
    (_drop("spade_blocks.1.conv2.weight"), "official generator lacks 'spade_blocks.1.conv2.weight'"),
    (_rename("spade_blocks.1.conv2.weight", "spade_blocks.1.convv2.weight"),
     "official generator key 'spade_blocks.1.convv2.weight' does not map"),
    (_drop("keypoints_embedding.weight"), "lacks 'keypoints_embedding.weight'"),
    (lambda s: s["discriminator"].__setitem__("fc.1.weight", s["discriminator"].pop("fc.2.weight")),
     "official discriminator key 'fc.1.weight' does not map"),
    (lambda s: s.pop("generator"), "no 'generator' entry"),
])
def test_broken_official_files_fail_with_one_line_naming_the_key(tmp_path, capsys, edit, message):
    path = official_gan_file(tmp_path, edit=edit)
    out = tmp_path / "runs"
    code = main(["import-checkpoint", "ganseg", str(path), "--protocol", "synthetic_parts", "--preset", "smoke",
                 "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not any(out.rglob("config.json"))  # no half-written run folder


def test_official_segmenter_loads_with_identical_logits(tmp_path):
    """'detector' = a wrapper with torchvision's deeplabv3_resnet50 at .model (segmenter.py:12-13)."""
    gan = official_gan_file(tmp_path)
    seg_dir = tmp_path / "log" / "seg_celeba_small" / "checkpoints"
    seg_dir.mkdir(parents=True)
    reference, _ = build_segmenter(SegmenterConfig(pretrained_backbone="none"), 9, load_pretrained=False)
    torch.save({"detector": {f"model.{k}": v for k, v in reference.state_dict().items()}, "optim": {}},
               seg_dir / "epoch_10.model")
    config, generator, segmenter, info = import_official(gan, GANSeg.config_for("smoke"),
                                                         segmenter_path=seg_dir / "epoch_10.model")
    assert config.segmenter.arch == "deeplabv3_resnet50" and config.num_parts == 8
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(reference.eval()(x)["out"], segmenter(x)["out"])
    assert info["segmenter_sha256"] and info["gan_sha256"]
    bad = seg_dir / "bad.model"
    torch.save({"detector": {"backbone.x": torch.zeros(1)}}, bad)
    with pytest.raises(Exception, match="'backbone.x' does not start with 'model.'"):
        import_official(gan, GANSeg.config_for("smoke"), segmenter_path=bad)
