"""The lean core install: torch and numpy suffice for the optimizers, the smoothness probe and
fit, and the theory calculators; the rest names the extra to install."""

from __future__ import annotations

import ctypes
import importlib.metadata as md
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

import adaptopt
import adaptopt.optim  # not imported by "import adaptopt"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
EXTRA_ONLY = ("scipy", "matplotlib", "tqdm", "markdown", "spacy", "sacrebleu", "submitit")


def run_python(python: str | Path, code: str, **kwargs) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=env, timeout=120, **kwargs,
    )  # fmt: skip


def test_core_modules_import_no_extra():
    """Beyond what ``import torch`` itself loads (torch.hub imports tqdm when it is present),
    the core modules load none of the extras' packages."""
    code = f"""
        import importlib, sys
        sys.path.insert(0, {str(REPO / "src")!r})
        import torch
        before = set(sys.modules)
        for module in ("adaptopt.optim", "adaptopt", "adaptopt.smoothness", "adaptopt.theory"):
            importlib.import_module(module)
            new = {{m.split(".")[0] for m in set(sys.modules) - before}}
            print(module, sorted(new & set({EXTRA_ONLY!r})))
    """
    result = run_python(sys.executable, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == [
        "adaptopt.optim []",
        "adaptopt []",
        "adaptopt.smoothness []",
        "adaptopt.theory []",
    ]


def _distributions_of(names: list[str]) -> set[str]:
    """``names`` and everything they require (extras and other-platform markers excluded)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = re.split(r"[ <>=!~;\[]", todo.pop(), maxsplit=1)[0].lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # e.g. setuptools' markers for other Python versions
        seen.add(name)
        for req in dist.requires or []:
            if "extra ==" not in req and _marker_ok(req):
                todo.append(req)
    return seen


def _marker_ok(req: str) -> bool:
    if ";" not in req:
        return True
    from packaging.markers import Marker  # packaging ships with pip/setuptools/build

    return Marker(req.split(";", 1)[1]).evaluate()


def _core_venv(path: Path) -> Path:
    """A venv whose site-packages holds symlinks to torch, numpy and their requirements only
    (no copy of torch), plus a .pth to this checkout's src."""
    venv.EnvBuilder(with_pip=False, symlinks=True).create(path)
    python = path / "bin" / "python"
    site = Path(run_python(python, "import sysconfig; print(sysconfig.get_path('purelib'))")
                .stdout.strip())  # fmt: skip
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in _distributions_of(core):
        dist = md.distribution(name)
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in tops:
            source = Path(dist.locate_file(top))
            skip = top.endswith(".dist-info") or top in ("..", "bin", "__pycache__")
            if skip or not source.exists() or (site / top).exists():
                continue
            (site / top).symlink_to(source)
        (site / Path(str(dist._path)).name).symlink_to(dist._path)  # metadata: md finds it
    (site / "adaptopt-src.pth").write_text(str(REPO / "src") + "\n")
    return python


CORE_SCRIPT = """
    import importlib.util, sys
    missing = [m for m in {extra_only!r} if importlib.util.find_spec(m) is not None]
    assert not missing, f"not a core-only environment: {{missing}} importable"

    import numpy as np
    import torch
    import adaptopt
    from adaptopt.optim import available_optimizers, create_optimizer
    from adaptopt.smoothness import SmoothnessProbe, fit_l0_l1, plot_records, read_records
    from adaptopt.theory import gd_lower_bound, min_horizon, theorem1_settings
    from adaptopt._optional import MissingExtraError

    torch.manual_seed(0)
    target = torch.randn(5)
    for name in available_optimizers():
        valid = adaptopt.optim.hyperparameters(name)
        for path in ("single", "foreach", "fused"):  # fused: the native kernels, built here
            if path != "single" and path not in valid:
                continue
            x = torch.zeros(5, requires_grad=True)
            hp = {{}} if name == "sgdol" else {{"lr": 1e-2}}
            if "foreach" in valid:
                hp["foreach"] = path == "foreach"
            if "fused" in valid:
                hp["fused"] = path == "fused"
            opt = create_optimizer(name, [x], **hp)

            def closure():
                opt.zero_grad()
                loss = ((x - target) ** 2).sum()
                loss.backward()
                return loss

            first = closure().item()
            for _ in range(5):
                opt.step(closure)
            last = closure().item()
            assert last < first and torch.isfinite(x).all(), (name, path, first, last)
    print("stepped", len(available_optimizers()))
    from adaptopt.optim._fused import native
    assert native.available() == native.PATH.exists()  # a built library loads

    grad = np.geomspace(0.1, 10, 30)
    fit = fit_l0_l1(grad, 1 + 2 * grad)  # coverage 1: solved without scipy
    assert abs(fit.L0 - 1) < 1e-9 and abs(fit.L1 - 2) < 1e-9, fit
    for call, extra_msg in [
        (lambda: fit_l0_l1(grad, grad, coverage=0.9), "scipy"),
        (lambda: plot_records(None), "matplotlib"),
    ]:
        try:
            call()
        except MissingExtraError as err:
            assert "pip install 'adaptopt[experiments]'" in str(err) and extra_msg in str(err)
        else:
            raise AssertionError("expected MissingExtraError")
    T = min_horizon(1.0, 1.0, 1.0, 1.0, beta2=0.99, dim=1)
    assert theorem1_settings(1.0, 1.0, 1.0, 1.0, T, beta2=0.99, dim=1).T_satisfied
    assert gd_lower_bound(2.718281828, 1.0, 1.0, 0.5, 1.0) > 0
    print("theory", T)
    print("smoothness probe", SmoothnessProbe.__name__)

    # the command line: --version works, a command needing an extra names it (exit 2)
    import contextlib, io
    from adaptopt.cli.main import main
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(["--version"])
    print("version:", out.getvalue().strip())
    with contextlib.redirect_stderr(io.StringIO()) as err:
        print("report exit", main(["report", "runs"]))
    print("report says:", err.getvalue().strip())
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code = main(["data", "list", "--no-verify"])
    assert out.getvalue().startswith("ptb "), out.getvalue()
    print("data list exit", code)
"""


def test_core_only_environment_steps_every_optimizer(tmp_path):
    python = _core_venv(tmp_path / "venv")
    result = run_python(python, CORE_SCRIPT.format(extra_only=EXTRA_ONLY), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"stepped {len(adaptopt.optim.available_optimizers())}" in result.stdout
    lines = result.stdout.splitlines()
    assert f"version: adaptopt {adaptopt.__version__} (torch " in result.stdout
    assert "report exit 2" in lines and "data list exit 0" in lines
    assert (
        "report says: adaptopt: error: adaptopt report needs the package 'markdown', which is not "
        "installed; install it with: pip install 'adaptopt[experiments]'"
    ) in lines


def test_version_and_extras_in_one_place():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["dynamic"] == ["version"]
    assert meta["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "adaptopt.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", adaptopt.__version__)
    assert sorted(meta["project"]["dependencies"]) == ["numpy>=1.24", "torch>=2.4"]
    extras = meta["project"]["optional-dependencies"]
    assert set(extras) == {"experiments", "slurm", "integrations", "dev"}
    assert all("==" in req for req in extras["integrations"])  # the tested versions, pinned
    assert "adaptopt[experiments,slurm,integrations]" in extras["dev"]
    assert f"## [{adaptopt.__version__}]" in (REPO / "CHANGELOG.md").read_text()


def test_wheel_and_sdist_carry_the_native_kernels(tmp_path):
    """``python -m build``: the wheel holds the native library built from native.cpp (for
    this platform, for any Python 3: ``py3-none-<platform>``), and the build never imports
    torch (it is blocked here; an isolated build environment has only setuptools)."""
    pytest.importorskip("build", reason="needs the dev extra (python -m build)")
    from adaptopt.optim._fused import layout, native

    source = tmp_path / "src-tree"  # build from a copy: nothing is written into the checkout
    items = ("pyproject.toml", "setup.py", "README.md", "CHANGELOG.md", "MANIFEST.in", "src")
    for item in items:
        src = REPO / item
        if src.is_dir():
            skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so")
            shutil.copytree(src, source / item, ignore=skip)
        else:
            source.mkdir(exist_ok=True)
            shutil.copy(src, source / item)
    blocker = tmp_path / "no-torch"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(blocker)
    out = tmp_path / "dist"
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=1800, env=env,  # two compilations: ~1 min idle
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    version = adaptopt.__version__
    wheels = list(out.glob(f"adaptopt-{version}-*.whl"))
    assert len(wheels) == 1 and wheels[0].name.startswith(f"adaptopt-{version}-py3-none-")
    assert not wheels[0].name.endswith("-any.whl")  # a platform wheel: it holds a library
    library = f"adaptopt/optim/_fused/{layout.LIBRARY}"
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"adaptopt-{version}.dist-info/METADATA").decode()
        assert library in names, sorted(n for n in names if "_fused" in n)
        if platform.machine() == "x86_64":  # and the AVX2 build
            assert f"adaptopt/optim/_fused/{layout.LIBRARY_AVX2}" in names
        built = tmp_path / layout.LIBRARY
        built.write_bytes(wheel.read(library))
    lib = ctypes.CDLL(str(built))
    lib.adaptopt_fused_abi.restype = ctypes.c_char_p
    assert lib.adaptopt_fused_abi().decode() == layout.abi_key(native.SOURCE.read_bytes())
    assert "adaptopt/optim/_fused/native.cpp" in names
    assert "adaptopt/optim/_fused/native.py" in names and "adaptopt/cli/data.py" in names
    assert "Requires-Dist: torch>=2.4\n" in metadata and "Requires-Dist: numpy>=1.24\n" in metadata
    lines = metadata.splitlines()
    required = [ln for ln in lines if ln.startswith("Requires-Dist") and "extra" not in ln]
    assert len(required) == 2, required  # nothing else without an extra
    assert 'Requires-Dist: scipy>=1.10; extra == "experiments"' in metadata
    with tarfile.open(out / f"adaptopt-{version}.tar.gz") as sdist:
        members = set(sdist.getnames())
    assert f"adaptopt-{version}/src/adaptopt/optim/_fused/native.cpp" in members
    assert f"adaptopt-{version}/setup.py" in members
    assert f"adaptopt-{version}/CHANGELOG.md" in members
    assert not any(m.endswith(".so") for m in members)  # sources only
