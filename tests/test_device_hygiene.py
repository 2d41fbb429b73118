"""Device hygiene of methods/ and protocols/: the device is always the run's (``--device``, through
``FitContext.device`` or the ``device=`` a protocol is given), never hard-coded.

The scan parses every Python file (comments and docstrings never match) and flags:

- ``x.cuda(...)``: moves to *a* GPU, not the run's device; use ``.to(device)``;
- a ``"cpu"`` device default or fallback: a parameter default (``device="cpu"``), an assignment
  (``device = "cpu"``, a dataclass field), a ``"cpu"`` keyword argument (``f(device="cpu")``) and
  ``torch.device("cpu")``, also inside ``x if c else "cpu"`` / ``x or "cpu"``.

Allowed without an entry: ``map_location="cpu"`` (loading onto the host, then moving) and
``.to("cpu")`` / ``.to(device="cpu")`` (moving a result to the host for numpy). Anything else
needs an ``ALLOWED`` entry with its reason.

And the other direction: scoring with ``--device`` reaches the FID feature extractor.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("methods", "protocols")
CPU = "cpu"

# (file relative to the repository root, enclosing function or class, or "*" for the whole file)
ALLOWED = {
    ("methods/context.py", "resolve_device"):
        "the one resolver of --device: 'auto' is CUDA when present and else the CPU",
    ("methods/common/parallel.py", "*"):
        "data parallelism: a gloo (CPU) process group's tensors live on the CPU by definition",
    ("protocols/spec.py", "protocol_device"):
        "the one helper where a protocol called with device=None (a direct caller naming none) runs on the CPU",
}


def _is_cpu(node: ast.AST | None) -> bool:
    """A ``"cpu"`` / ``"cpu:N"`` literal, or an expression that falls back to one."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value == CPU or node.value.startswith(CPU + ":")
    if isinstance(node, ast.IfExp):
        return _is_cpu(node.body) or _is_cpu(node.orelse)
    if isinstance(node, ast.BoolOp):
        return any(_is_cpu(v) for v in node.values)
    return False


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


class _Scan(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scope: list[str] = []
        self.hits: list[tuple[int, tuple[str, ...], str]] = []

    def hit(self, node: ast.AST, why: str) -> None:
        self.hits.append((node.lineno, tuple(self.scope), why))

    def _scoped(self, node: ast.AST) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def _defaults(self, args: ast.arguments) -> None:
        for default in [*args.defaults, *args.kw_defaults]:
            if _is_cpu(default):
                self.hit(default, 'a "cpu" parameter default')

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scope.append(node.name)  # a parameter default belongs to its function (for ALLOWED)
        self._defaults(node.args)
        self.scope.pop()
        self._scoped(node)

    visit_AsyncFunctionDef = visit_FunctionDef
    visit_ClassDef = _scoped

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._defaults(node.args)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if _is_cpu(node.value):
            self.hit(node, '= "cpu"')
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if _is_cpu(node.value):
            self.hit(node, '= "cpu" (a field or variable default)')
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _callee(node)
        if name == "cuda" and isinstance(node.func, ast.Attribute):
            self.hit(node, ".cuda() call (use .to(device))")
        if name == "device" and (any(_is_cpu(a) for a in node.args)
                                 or any(k.arg == "type" and _is_cpu(k.value) for k in node.keywords)):
            self.hit(node, 'device("cpu")')
        if name != "to":  # .to("cpu") / .to(device="cpu") move a result to the host: fine
            for kw in node.keywords:
                if kw.arg != "map_location" and _is_cpu(kw.value):
                    self.hit(kw.value, f'{kw.arg}="cpu" argument')
        self.generic_visit(node)


def scan_source(text: str) -> list[tuple[int, tuple[str, ...], str]]:
    """(line, enclosing scopes, why) of every violation in ``text``, allowed or not."""
    scan = _Scan()
    scan.visit(ast.parse(text))
    return scan.hits


def _allowed_by(rel: str, scope: tuple[str, ...]) -> tuple[str, str] | None:
    for key in ((rel, "*"), *((rel, s) for s in scope)):
        if key in ALLOWED:
            return key
    return None


def _files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _violations(folder: str) -> tuple[list[str], set[tuple[str, str]]]:
    bad, used = [], set()
    for path in _files(folder):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        lines = text.splitlines()
        for line, scope, why in scan_source(text):
            key = _allowed_by(rel, scope)
            if key:
                used.add(key)
            else:
                bad.append(f"{rel}:{line} ({'.'.join(scope) or 'module'}): {why}: {lines[line - 1].strip()}")
    return bad, used


def test_the_scan_catches_the_patterns_and_passes_host_moves():
    src = '''
def f(x, device="cpu", *, other="cuda"):
    y = x.cuda()
    d = torch.device("cpu")
    e = torch.device(type="cpu")
    g = torch.device("cuda" if ok else "cpu")
    h = device or "cpu"
    k = Thing(device="cpu:0")
    z = x.to("cpu")                          # fine: to the host
    w = x.detach().to(device="cpu", dtype=float)  # fine
    s = torch.load(p, map_location="cpu")   # fine
    t = torch.cuda.is_available()           # fine: not a .cuda() call
    """device="cpu" in a docstring is fine"""
    names = {"cpu": 1}                      # fine: a dict key, not a device default
class C:
    device: str = "cpu"
    lam = lambda device="cpu": device
'''
    hits = scan_source(src)
    lines = sorted({line for line, _, _ in hits})
    assert lines == [2, 3, 4, 5, 6, 7, 8, 16, 17], hits
    assert all(scope in (("f",), ("C",)) for _, scope, _ in hits)


@pytest.mark.parametrize("folder", SCANNED)
def test_no_cuda_calls_or_hard_coded_cpu_defaults(folder):
    bad, _ = _violations(folder)
    assert not bad, "device hygiene (see this file's docstring):\n" + "\n".join(bad)


def test_every_allow_list_entry_is_still_needed():
    used = set().union(*(_violations(folder)[1] for folder in SCANNED))
    assert set(ALLOWED) <= used, f"stale ALLOWED entries (remove them): {sorted(set(ALLOWED) - used)}"


# ----------------------------------------------------------------------------- --device reaches FID

class _Reference:
    name = "all"

    def __init__(self):
        self.images = np.random.default_rng(0).integers(0, 256, size=(50, 16, 16, 3), dtype=np.uint8)

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return self.images[i]


class _Dataset:
    def split(self, name, limit=None):
        return _Reference()


class _Sampler:
    def sample(self, n, seed):
        return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed),
                             dtype=torch.uint8)


def test_scoring_device_reaches_the_fid_feature_extractor(tmp_path, monkeypatch):
    """``runner.score`` (what ``run`` and ``eval --device`` call) hands the resolved ``--device``
    through ``Protocol.score`` and ``FidProtocol.evaluate`` to every feature-network call, on both
    the real and the generated side; a direct ``score`` without a device runs on the CPU."""
    from segbench import feature_nets
    from segbench.benchmark import runner
    from segbench.protocols.fid import CubPhotosFid

    seen = []

    def features(images_uint8, **kw):
        seen.append(kw.get("device"))
        return images_uint8.double().mean(dim=(2, 3)).numpy()  # [N, 3] channel means

    monkeypatch.setattr(feature_nets, "inception_features", features)
    monkeypatch.setenv("SEGBENCH_CACHE", str(tmp_path / "cache"))
    protocol = CubPhotosFid({"n_generated": "100"})
    resolved = runner.Resolved(method_cls=None, method_config=None, protocol=protocol, dataset=_Dataset())
    req = runner.RunRequest(method="m", protocol=protocol.spec.name, preset="smoke", progress=False, device="cpu")
    context = runner._context(req, resolved, "run0", {"commit": "0" * 40, "dirty": False}, "2000-01-01")
    (record,) = runner.score(_Sampler(), resolved, req, context)
    assert record["metric"] == "fid100" and np.isfinite(record["value"])
    assert len(seen) == 1 + 2 and all(d == torch.device("cpu") and isinstance(d, torch.device) for d in seen)

    seen.clear()
    protocol.score(_Sampler(), {"reference": _Reference()}, progress=False)  # no device: the CPU
    assert seen and all(d == torch.device("cpu") for d in seen)
    if torch.cuda.is_available():
        seen.clear()
        runner.score(_Sampler(), resolved, runner.RunRequest(**{**req.__dict__, "device": "cuda"}), context)
        assert seen and all(d.type == "cuda" for d in seen)
