"""Build of the native CPU kernels of the fused optimizer steps; the rest is in pyproject.toml.

``src/adaptopt/optim/_fused/native.cpp`` is plain C++ (no Python or torch headers), built
into a shared library that ``native.py`` loads with ctypes: building needs a C++ compiler
with OpenMP and nothing else (no torch in the build environment). The ids and coefficient
indices the source needs come from ``layout.py`` as ``-D`` flags. Portable flags (no
``-march=native``: the library goes into wheels). OpenMP is linked as ``libgomp.so.1``, the
runtime that torch's own wheels load, so the kernels share torch's thread pool. The build is
optional: without a compiler the package installs and the fused CPU step falls back to the
``torch.compile`` kernels (with one warning). In a checkout: ``python setup.py build_ext
--inplace`` (``pip install -e .`` does the same).

On x86-64 a second build of the same source uses AVX2 and FMA (``layout.LIBRARY_AVX2``),
which ``native.py`` loads on CPUs that have them (as torch dispatches its own CPU kernels); the
portable build runs everywhere else. The libraries do not use the Python C API, so wheels are
tagged ``py3-none-<platform>``.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

FUSED = "src/adaptopt/optim/_fused"
# After the interpreter's own CFLAGS (-O3 -g -fwrapv ...): these win.
COMPILE_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-fno-wrapv", "-fPIC", "-g0"]


def _layout():
    """``layout.py`` loaded by path (importing the package would import torch)."""
    path = Path(__file__).resolve().parent / FUSED / "layout.py"
    spec = importlib.util.spec_from_file_location("_adaptopt_fused_layout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildNative(build_ext):
    """build_ext for plain shared libraries: file names ``<name>.so`` (no Python ABI suffix,
    ``layout.LIBRARY`` ...) and no ``PyInit_`` export."""

    def get_ext_filename(self, fullname: str) -> str:
        return os.path.join(*fullname.split(".")) + ".so"

    def get_export_symbols(self, ext: Extension) -> list[str]:
        return []


class WheelWithoutPythonABI(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


LAYOUT = _layout()
SOURCE = Path(__file__).resolve().parent / FUSED / "native.cpp"
ABI = LAYOUT.abi_key(SOURCE.read_bytes())
X86_64 = platform.machine().lower() in ("x86_64", "amd64") and "x86_64" in (
    sysconfig.get_platform().replace("-", "_")
)
VARIANTS = {LAYOUT.LIBRARY: [], **({LAYOUT.LIBRARY_AVX2: ["-mavx2", "-mfma"]} if X86_64 else {})}


def extension(library: str, isa_flags: list[str]) -> Extension:
    return Extension(
        "adaptopt.optim._fused." + library.removesuffix(".so"),
        sources=[f"{FUSED}/native.cpp"],
        language="c++",
        extra_compile_args=[
            *COMPILE_FLAGS,
            *isa_flags,
            *LAYOUT.defines(),
            f'-DADAPTOPT_FUSED_ABI="{ABI}"',
        ],
        extra_link_args=["-fopenmp"],
        optional=True,  # without a compiler: installed without them (fused CPU steps fall back)
    )


setup(
    ext_modules=[extension(library, flags) for library, flags in VARIANTS.items()],
    cmdclass={"build_ext": BuildNative, "bdist_wheel": WheelWithoutPythonABI},
)
