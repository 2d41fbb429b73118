"""segbench installs one import name (``segbench``) so it coexists with other packages that
use the folder names of this checkout (HuggingFace's ``datasets`` above all)."""
import ast
import json
import subprocess
import sys
import tomllib


from tests.conftest import REPO

DUMMY_DATASETS = '"""A stand-in for another distribution\'s top-level ``datasets`` package."""\nIS_DUMMY = True\n'

SCRIPT = """
import sys
sys.path.insert(0, {dummy!r})
import datasets
assert getattr(datasets, "IS_DUMMY", False), datasets.__file__
from segbench.benchmark.cli import main
rc = main(["run", "--method", "centre_prior", "--protocol", "synthetic_parts", "--preset", "smoke",
           "--limit", "6", "--out", {out!r}, "--no-progress"])
import datasets as again
assert again is datasets and again.IS_DUMMY
print("datasets ->", datasets.__file__)
sys.exit(rc)
"""


def test_a_foreign_datasets_package_first_on_the_path_does_not_break_segbench(tmp_path):
    dummy = tmp_path / "site"
    (dummy / "datasets").mkdir(parents=True)
    (dummy / "datasets" / "__init__.py").write_text(DUMMY_DATASETS)
    out = tmp_path / "runs"
    script = SCRIPT.format(dummy=str(dummy), out=str(out))
    # cwd outside the checkout, so only sys.path decides what ``datasets`` is.
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": f"{dummy}:{REPO}", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"datasets -> {dummy / 'datasets' / '__init__.py'}" in proc.stdout
    (run_dir,) = out.glob("synthetic_parts/centre_prior/*")
    records = json.loads((run_dir / "metrics.json").read_text())
    assert {r["metric"] for r in records} >= {"fg_iou_per_image_mean"}


def test_the_package_list_maps_every_code_folder():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(config["packages"])
    on_disk = {"segbench"} | {"segbench." + ".".join(p.parent.relative_to(REPO).parts)
                              for top in ("benchmark", "methods", "datasets", "protocols")
                              for p in (REPO / top).rglob("__init__.py")}
    assert packages == on_disk
    assert config["package-dir"] == {"segbench": "segbench", **{f"segbench.{t}": t for t in
                                     ("benchmark", "methods", "datasets", "protocols")}}


def test_no_module_imports_the_bare_folder_names():
    bare = {"benchmark", "methods", "datasets", "protocols"}
    offenders = []
    for path in REPO.glob("*/**/*.py"):
        if path.parts[len(REPO.parts)] not in bare | {"segbench", "tests"}:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in bare]
    assert not offenders
