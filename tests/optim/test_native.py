"""The native CPU kernels of the fused steps (``adaptopt.optim._fused.native``): built when the
package is installed, loaded without compiling, called through a ctypes interface checked
against the C prototypes, with ids defined once in ``layout.py``; the step counters are
incremented inside the call."""

from __future__ import annotations

import ctypes
import io
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
import torch
from infos import OPTIMIZER_INFOS

from adaptopt.optim import AdamProx, GeneralizedSignSGD, Lion, _fused
from adaptopt.optim._fused import layout, native

needs_library = pytest.mark.skipif(not native.available(), reason="native kernels not built")
F64 = layout.DTYPE_CODES["float64"]


@pytest.fixture
def native_backend(monkeypatch):
    monkeypatch.setattr(_fused, "CPU_BACKEND", "native")


@pytest.fixture
def reload_library():
    """``native.library()`` is loaded again inside the test and after it."""
    native.library.cache_clear()
    yield
    native.library.cache_clear()


def test_library_is_built_into_the_package():
    """The package holds the library next to native.cpp (``pip install [-e] .`` builds it),
    and it is the build of this native.cpp and layout.py (its ABI key)."""
    if not native.PATH.exists() and shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler here: installed without the native kernels")
    assert native.PATH.parent == Path(_fused.__file__).parent
    assert native.PATH.exists(), (
        f"{native.PATH} is missing: pip install -e . or python setup.py build_ext --inplace"
    )
    lib = native.library()
    assert lib is not None
    assert lib.adaptopt_fused_abi().decode() == layout.abi_key(native.SOURCE.read_bytes())
    avx2 = bool(lib.adaptopt_fused_has_avx2()) and native.PATH_AVX2.exists()
    assert lib._name == str(native.PATH_AVX2 if avx2 else native.PATH)


BUILDS = [
    pytest.param(path, marks=pytest.mark.skipif(not path.exists(), reason=f"{path.name} not built"))
    for path in (native.PATH, native.PATH_AVX2)
]


def load_build(path: Path) -> ctypes.CDLL:
    """One build of the library, loaded; the test is skipped where this CPU cannot run it."""
    lib = native.load(path)
    if path == native.PATH_AVX2 and not lib.adaptopt_fused_has_avx2():
        pytest.skip("this CPU has no AVX2")
    return lib


def disassembly(path: Path) -> str:
    """``objdump -d`` of a build (the test is skipped without objdump)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed")
    return subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


@pytest.mark.parametrize("path", BUILDS, ids=["portable", "avx2"])
def test_every_build_computes_the_reference_step(path, monkeypatch):
    """The portable and the AVX2 builds (only one runs on a given machine by default) both
    compute the single-tensor reference in float64, for every two-group sample of every
    fused optimizer of the table (tests/optim/infos.py: every kernel, weight-decay mode,
    bias correction, maximize, Nesterov; the global-norm ones with their norm pass), on
    tensors long enough for the vector loops and their tails."""
    lib = load_build(path)
    monkeypatch.setattr(native, "library", lambda: lib)
    monkeypatch.setattr(_fused, "CPU_BACKEND", "native")
    calls = []
    launch = native.launch
    monkeypatch.setattr(native, "launch", lambda *a, **k: calls.append(a[0]) or launch(*a, **k))
    g = torch.Generator().manual_seed(6)
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(70001,), (33, 3), (1,)]]
    cases = [(info, s) for info in OPTIMIZER_INFOS if info.supports_fused for s in info.samples]
    assert {info.family for info, _ in cases} == {"adam", "lion", "global_norm"}
    for info, sample in cases:
        results = []
        for fused in (True, False):
            params = [p.clone().requires_grad_() for p in start]
            groups = [
                dict(params=params[:1], fused=fused, **sample.groups[0]),
                dict(params=params[1:], fused=fused, **sample.groups[1]),
            ]
            opt = info.cls(groups, **sample.common)
            for t in range(3):
                for i, p in enumerate(params):
                    p.grad = torch.randn(
                        p.shape,
                        generator=torch.Generator().manual_seed(t + 9 * i),
                        dtype=torch.float64,
                    )
                opt.step()
            results.append(params)
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14, msg=sample.id)
    assert set(calls) == set(layout.KERNEL_IDS)  # every kernel ran in this build


@pytest.mark.parametrize("path", BUILDS, ids=["portable", "avx2"])
def test_every_build_vectorizes_the_float_square_root_and_division(path):
    """Both builds hold packed float32 square roots and divisions (Generalized SignSGD's
    element loop vectorized): a select ``denom == 0 ? 1 : denom`` before the division made
    GCC branch around it and leave every loop scalar (no ``sqrtps``/``divps`` at all)."""
    code = disassembly(path)
    mnemonics = re.findall(r"^\s*[0-9a-f]+:\s+(\S+)", code, re.M)
    for packed in ("sqrtps", "divps"):
        assert any(m.removeprefix("v") == packed for m in mnemonics), f"no {packed} in {path.name}"


HALF = {"float16": (torch.float16, torch.int16, 10), "bfloat16": (torch.bfloat16, torch.int16, 7)}


def _convert(lib, dtype: str, to_float: bool, source: torch.Tensor) -> torch.Tensor:
    """The build's own conversion (the kernels' load and store) of ``source``."""
    half = HALF[dtype][0]
    out = torch.empty(source.shape, dtype=torch.float32 if to_float else half)
    status = lib.adaptopt_fused_convert(
        layout.DTYPE_CODES[dtype], int(to_float), source.data_ptr(), out.data_ptr(), source.numel()
    )
    assert status == layout.STATUS["ok"]
    return out


def _same_bits_or_both_nan(actual: torch.Tensor, expected: torch.Tensor, bits: torch.dtype):
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan)
    assert torch.equal(actual[~nan].view(bits), expected[~nan].view(bits))


@pytest.mark.parametrize("dtype", list(HALF))
@pytest.mark.parametrize("path", BUILDS, ids=["portable", "avx2"])
def test_every_build_converts_16_bit_floats_as_torch(path, dtype):
    """The kernels' conversions against torch's: every one of the 65,536 16-bit patterns to
    float32, and float32 to 16 bits for every sign, exponent and kept-mantissa pattern combined
    with the dropped bits that decide the rounding (0, 1, just below, at and just above half
    an ulp, all ones): round to nearest even, overflow to ±Inf, subnormals, signed zeros."""
    lib = load_build(path)
    half, bits, mantissa_bits = HALF[dtype]
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(half)
    _same_bits_or_both_nan(_convert(lib, dtype, True, every), every.float(), torch.int32)
    dropped = 23 - mantissa_bits
    ulp = 1 << dropped
    low = torch.tensor([0, 1, ulp // 2 - 1, ulp // 2, ulp // 2 + 1, ulp - 1], dtype=torch.int64)
    kept = torch.arange(1 << (32 - dropped), dtype=torch.int64) << dropped
    patterns = (kept[:, None] | low).reshape(-1)
    floats = (patterns - (patterns >> 31 << 32)).to(torch.int32).view(torch.float32)
    _same_bits_or_both_nan(_convert(lib, dtype, False, floats), floats.to(half), bits)


@pytest.mark.parametrize("path", BUILDS, ids=["portable", "avx2"])
def test_float16_rounding_at_the_boundaries(path):
    """float32 -> float16 at values whose result follows from the format alone (binary16:
    10 mantissa bits, largest 65504, smallest subnormal 2^-24), ties to even."""
    lib = load_build(path)
    cases = {
        65504.0: 0x7BFF,  # largest finite
        65519.99: 0x7BFF,  # below the midpoint to 2^16
        65520.0: 0x7C00,  # the midpoint: ties to the even pattern, which is Inf
        float("inf"): 0x7C00,
        -0.0: 0x8000,
        2.0**-14: 0x0400,  # smallest normal
        2.0**-24: 0x0001,  # smallest subnormal
        2.0**-25: 0x0000,  # half of it: ties to even 0
        1.5 * 2.0**-24: 0x0002,  # between 1 and 2 units: ties to even 2
        2.0**-25 + 2.0**-40: 0x0001,  # just above the midpoint
        1.0 + 2.0**-11: 0x3C00,  # midpoint above 1: ties to even 1.0
        1.0 + 3 * 2.0**-11: 0x3C02,  # midpoint above 1 + 2^-10: ties to even 1 + 2^-9
        -(2.0**-14 - 2.0**-25): 0x8400,  # a subnormal that rounds up into the normals
    }
    floats = torch.tensor(list(cases), dtype=torch.float32)
    got = _convert(lib, "float16", False, floats).view(torch.int16).to(torch.int32) & 0xFFFF
    assert got.tolist() == list(cases.values())
    nan = _convert(lib, "float16", False, torch.tensor([float("nan")]))
    assert nan.isnan().all()
    assert lib.adaptopt_fused_convert(F64, 0, None, None, 0) == layout.STATUS["unsupported_dtype"]


@pytest.mark.parametrize("path", BUILDS, ids=["portable", "avx2"])
def test_no_build_calls_a_library_for_half_conversions(path):
    """float16 loads and stores are inline integer code, not the compiler runtime's
    ``__extendhfsf2``/``__truncsfhf2`` (one call per element, which kept every float16 loop
    scalar: float16 Generalized SignSGD took 21x torch's fused Adam, bfloat16 0.96x)."""
    code = disassembly(path)
    assert not re.findall(r"call.*<__(extendhfsf2|truncsfhf2)", code)


def test_vector_loops_keep_the_zero_and_nan_cases(native_backend):
    """The special cases of the element loops hold in their vectorized blocks (200 float32
    elements: three blocks of 64 and a tail): GSignSGD with eps = 0 leaves elements whose
    gradients are 0 in every step unchanged (0/0 := 0), Lion's sign of 0 is 0 and of NaN NaN,
    while every other element moves (by exactly lr for Lion)."""
    n, lr = 200, 0.25
    g = torch.Generator().manual_seed(3)
    zero = torch.arange(n) % 3 == 0
    start = torch.randn(n, generator=g)
    x = torch.nn.Parameter(start.clone())
    opt = GeneralizedSignSGD([x], lr=lr, eps=0.0, bias_correction=True, fused=True)
    for _ in range(3):
        x.grad = torch.randn(n, generator=g).masked_fill(zero, 0.0)
        opt.step()
    assert torch.equal(x.detach()[zero], start[zero])
    assert bool(x.detach()[~zero].ne(start[~zero]).all() and x.isfinite().all())

    grad = torch.randn(n, generator=g).masked_fill(zero, 0.0)
    nan = torch.tensor([5, 70, 133, 199])
    grad[nan] = float("nan")
    x = torch.nn.Parameter(start.clone())
    x.grad = grad
    Lion([x], lr=lr, fused=True).step()
    expected = start - lr * torch.sign(grad)  # x - lr sign(g), rounded once as in the kernel
    assert bool(x.detach()[nan].isnan().all())
    keep = torch.ones(n, dtype=torch.bool)
    keep[nan] = False
    assert torch.equal(x.detach()[keep], expected[keep])
    assert torch.equal(x.detach()[zero], start[zero])


# -- the interface -----------------------------------------------------------------------------

C_TYPES = {
    "int": ctypes.c_int,
    "int64_t": ctypes.c_int64,
    "void* const*": ctypes.POINTER(ctypes.c_void_p),
    "const int64_t*": ctypes.POINTER(ctypes.c_int64),
    "const double*": ctypes.POINTER(ctypes.c_double),
    "double*": ctypes.POINTER(ctypes.c_double),
    "const char*": ctypes.c_char_p,
    "const void*": ctypes.c_void_p,
    "void*": ctypes.c_void_p,
}


def c_prototypes(source: str) -> dict[str, tuple[str, list[str]]]:
    """``{name: (return type, [parameter types])}`` of the ``extern "C"`` functions, types
    written ``T*`` with single spaces."""

    def normal(ctype: str) -> str:
        return re.sub(r"\s*\*", "*", " ".join(ctype.split()))

    found = {}
    for match in re.finditer(r'extern "C"\s+([\w\s*]+?)\s*\b(\w+)\s*\(([^)]*)\)', source):
        restype, name, parameters = match.groups()
        types = []
        for parameter in filter(None, (p.strip() for p in parameters.split(","))):
            ctype, _ = re.fullmatch(r"(.*?)\s*\b(\w+)", parameter, re.S).groups()
            types.append(normal(ctype))
        found[name] = (normal(restype), types)
    return found


def as_ctypes(prototypes: dict[str, tuple[str, list[str]]]) -> dict[str, tuple[object, list]]:
    return {
        name: (C_TYPES[restype], [C_TYPES[t] for t in types])
        for name, (restype, types) in prototypes.items()
    }


def test_ctypes_signatures_are_the_c_prototypes():
    """native.SIGNATURES (what ctypes converts and checks the arguments to) is the C
    declaration, argument by argument; negative control: a changed prototype is told apart."""
    source = native.SOURCE.read_text()
    prototypes = c_prototypes(source)
    assert set(prototypes) == {
        "adaptopt_fused_step",
        "adaptopt_fused_abi",
        "adaptopt_fused_has_avx2",
        "adaptopt_fused_convert",
    }
    assert len(prototypes["adaptopt_fused_step"][1]) == 14
    assert as_ctypes(prototypes) == native.SIGNATURES
    changed = source.replace("int64_t n,", "int n,")
    assert changed != source
    assert as_ctypes(c_prototypes(changed)) != native.SIGNATURES
    if native.available():
        for name, (restype, argtypes) in native.SIGNATURES.items():
            function = getattr(native.library(), name)
            assert (function.restype, function.argtypes) == (restype, argtypes)


def test_ids_are_defined_once_in_layout():
    """native.cpp names every id by its layout.py macro and writes none as a number."""
    source = native.SOURCE.read_text()
    assert not re.search(r"\bcase\s+\d", source)  # every case label is a macro
    for prefix, ids in (("KERNEL", layout.KERNEL_IDS), ("DTYPE", layout.DTYPE_CODES)):
        for name in ids:
            assert re.search(rf"\bcase {prefix}_{name.upper()}:", source), name
    assert set(native.DTYPES.values()) == set(layout.DTYPE_CODES.values())
    defines = layout.defines()
    assert f"-DKERNEL_LION={layout.KERNEL_IDS['lion']}" in defines
    assert len({d.split("=")[0] for d in defines}) == len(defines)


def _pointers(*tensors):
    return native._array(ctypes.c_void_p, [t.data_ptr() for t in tensors])


@needs_library
@pytest.mark.parametrize(
    "kernel,param_dtype,expected",
    [
        (max(layout.KERNEL_IDS.values()) + 1, F64, "unknown_kernel"),
        (-1, F64, "unknown_kernel"),
        (layout.KERNEL_IDS["momentum_update"], max(layout.DTYPE_CODES.values()) + 1,
         "unsupported_dtype"),
        (layout.KERNEL_IDS["gsignsgd"], F64, "invalid_arguments"),  # no step counters
        (layout.KERNEL_IDS["momentum_update"], F64, "ok"),  # control: the same call runs
    ],
)  # fmt: skip
def test_refused_calls_return_their_status_and_write_nothing(kernel, param_dtype, expected):
    x, g, b = torch.ones(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64), torch.ones(5)
    b = b.double()
    k = native._array(ctypes.c_double, [0.5] * len(layout.MOMENTUM_UPDATE))
    numel = native._array(ctypes.c_int64, [5])
    status = native.library().adaptopt_fused_step(
        kernel, 0, param_dtype, F64, 1, _pointers(x), _pointers(g), _pointers(b), None, None,
        numel, k, 1, None,
    )  # fmt: skip
    assert status == layout.STATUS[expected]
    ones = torch.ones(5, dtype=torch.float64)
    assert torch.equal(x, ones) == torch.equal(b, ones) == (expected != "ok")


@needs_library
def test_unknown_kernel_id_raises_from_launch(native_backend, monkeypatch):
    monkeypatch.setitem(layout.KERNEL_IDS, "lion", 1000)
    x = torch.nn.Parameter(torch.ones(3))
    opt = Lion([x], fused=True)
    x.grad = torch.ones(3)
    with pytest.raises(native.NativeKernelError, match="'lion': unknown_kernel"):
        opt.step()
    assert torch.equal(x.detach(), torch.ones(3))


# -- step counters ---------------------------------------------------------------------------

G = torch.tensor([1.0, -0.25, 3.0, -2e-3, 0.1], dtype=torch.float64)


def adam_float64(steps: int, lr=0.1, betas=(0.9, 0.99), eps=1e-8) -> torch.Tensor:
    """x after ``steps`` bias-corrected Adam steps from 0 with the constant gradient G."""
    x, m, v = torch.zeros(5, dtype=torch.float64), 0 * G, 0 * G
    for t in range(1, steps + 1):
        m = betas[0] * m + (1 - betas[0]) * G
        v = betas[1] * v + (1 - betas[1]) * G * G
        x = x - lr * (m / (1 - betas[0] ** t)) / ((v / (1 - betas[1] ** t)).sqrt() + eps)
    return x


@needs_library
def test_step_counters_are_incremented_by_the_native_call(native_backend, monkeypatch):
    """state["step"] counts the steps, in place, with no increment on the Python side (a
    foreach increment would raise here), and the bias corrections use the counts: the result
    is bias-corrected Adam in float64 (negative control: one step less is far off)."""

    def no_python_increment(*args, **kwargs):
        raise AssertionError("the step counters were incremented in Python")

    monkeypatch.setattr(torch, "_foreach_add_", no_python_increment)
    x = torch.nn.Parameter(torch.zeros(5, dtype=torch.float64))
    opt = AdamProx([x], lr=0.1, betas=(0.9, 0.99), eps=1e-8, fused=True)
    x.grad = G.clone()
    opt.step()
    counter = opt.state[x]["step"]
    for _ in range(4):
        opt.step()
    assert opt.state[x]["step"] is counter
    assert counter.dtype == torch.float64 and counter.item() == 5.0
    torch.testing.assert_close(x.detach(), adam_float64(5), rtol=1e-12, atol=0)
    assert not torch.allclose(x.detach(), adam_float64(4), rtol=1e-3)


@needs_library
def test_resume_from_a_state_dict_is_bitwise(native_backend):
    """6 steps equal 3 steps, a save and load into a new optimizer, and 3 more, bit for bit
    (each tensor's own count: the second tensor skips steps)."""

    def gradient(t, i):
        g = torch.Generator().manual_seed(10 * t + i)
        return torch.randn(4, generator=g, dtype=torch.float64)

    def steps(opt, params, ts):
        for t in ts:
            for i, p in enumerate(params):
                p.grad = None if (i == 1 and t % 3 == 0) else gradient(t, i)
            opt.step()

    def new(params):
        return GeneralizedSignSGD(params, lr=0.01, bias_correction=True, fused=True)

    start = [torch.randn(4, dtype=torch.float64) for _ in range(2)]
    straight = [p.clone().requires_grad_() for p in start]
    steps(new(straight), straight, range(6))
    resumed = [p.clone().requires_grad_() for p in start]
    first = new(resumed)
    steps(first, resumed, range(3))
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = new(resumed)
    second.load_state_dict(torch.load(buffer))
    steps(second, resumed, range(3, 6))
    assert [second.state[p]["step"].item() for p in resumed] == [6.0, 4.0]
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


# -- plans -------------------------------------------------------------------------------------


@needs_library
def test_plans_are_reused_and_rebuilt_when_memory_changes(native_backend):
    """The pointer tables are kept across steps, and rebuilt when a parameter's memory
    (``p.data = ...``) or a state tensor changes: the step never writes the old memory, and
    the result stays the reference's."""
    g = torch.Generator().manual_seed(5)
    start = [torch.randn(s, generator=g, dtype=torch.float64) for s in [(3, 4), (7,)]]
    fused = [p.clone().requires_grad_() for p in start]
    reference = [p.clone().requires_grad_() for p in start]
    options = dict(lr=0.01, betas=(0.8, 0.9), bias_correction=True)
    opt, ref = (
        GeneralizedSignSGD(fused, fused=True, **options),
        GeneralizedSignSGD(reference, fused=False, **options),
    )

    def step():
        for ps, o in ((fused, opt), (reference, ref)):
            for p in ps:
                p.grad = torch.ones_like(p) * p.detach().sum()
            o.step()

    def plan():
        return opt._fused_caches[id(opt.param_groups[0])]["gsignsgd"]

    step()
    first = plan()
    step()
    assert plan() is first
    old = fused[0].data
    fused[0].data = old.clone()
    kept = old.clone()
    step()
    assert plan() is not first and torch.equal(old, kept)
    second = plan()
    opt.state[fused[1]]["exp_avg"] = opt.state[fused[1]]["exp_avg"].clone()
    step()
    assert plan() is not second
    for a, b in zip(fused, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


# -- no compiling at run time; one warning without the library ------------------------------------


@needs_library
def test_constructors_and_steps_never_compile(monkeypatch, reload_library):
    """No subprocess (compiler) and no torch.compile kernel, from loading the library to
    constructing and stepping every fused optimizer of the table."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"invoked at run time: {args[:1]}")

    for module, name in [(subprocess, "run"), (subprocess, "Popen"), (os, "system")]:
        monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(_fused, "compiled", refuse)
    monkeypatch.setattr(_fused, "CPU_BACKEND", "native")
    for info in OPTIMIZER_INFOS:
        if not info.supports_fused:
            continue
        for fused in (None, True):
            x = torch.nn.Parameter(torch.randn(10))
            opt = info.make([x], fused=fused)
            assert opt.param_groups[0]["fused"], info.name
            x.grad = torch.ones(10)
            opt.step()


@pytest.mark.parametrize("cause", ["missing", "stale", "unloadable"])
def test_without_the_library_fused_steps_fall_back_with_one_warning(
    cause, monkeypatch, tmp_path, reload_library
):
    """A missing, stale (other source) or unloadable library: one warning per process, however
    many optimizers are built and stepped, and the compiled kernels compute the same step."""
    library = tmp_path / layout.LIBRARY
    if cause == "stale":
        if not native.PATH.exists():
            pytest.skip("native kernels not built")
        library = native.PATH
        source = tmp_path / "native.cpp"
        source.write_bytes(native.SOURCE.read_bytes() + b"\n// edited\n")
        monkeypatch.setattr(native, "SOURCE", source)
    if cause == "unloadable":
        library.write_bytes(b"not a shared library")
    monkeypatch.setattr(native, "PATH", library)
    monkeypatch.setattr(_fused, "CPU_BACKEND", "native")
    results = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fused in (None, True, True):
            x = torch.nn.Parameter(torch.arange(4.0, dtype=torch.float64))
            opt = Lion([x], lr=0.1, fused=fused)
            x.grad = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
            opt.step()
            results.append(x.detach().clone())
    messages = [str(w.message) for w in caught if "native fused CPU kernels" in str(w.message)]
    assert len(messages) == 1, messages
    assert {"missing": "was not built", "stale": "stale", "unloadable": "loading"}[cause] in (
        messages[0]
    )
    assert "pip install" in messages[0]
    assert not _fused.native_available()
    # fused=None: not fused for a small group without the native kernels; fused=True: compiled
    expected = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64) - 0.1 * torch.tensor(
        [1.0, -1.0, 1.0, 1.0], dtype=torch.float64
    )
    for result in results:
        torch.testing.assert_close(result, expected, rtol=1e-15, atol=0)
