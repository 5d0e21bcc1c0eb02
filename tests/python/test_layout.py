"""The config structs of gqa.h must have one layout in every language that calls libgqa.

Python's view comes from cffi, which parses include/gqa.h itself; C's from offsetof in
examples/c/gqa_layout.c; Rust's from std::mem::offset_of! over the #[repr(C)] mirrors in
examples/rust; Go's from unsafe.Offsetof over cgo's types in examples/go. Each prints
{"struct": {"size": N, "fields": {"name": offset}}} and must equal cffi's, field for field.

Rust and Go link libgqa, so they need an installed libgqa: GQA_PREFIX (a `cmake --install`
prefix with include/, lib/ and lib/pkgconfig/gqa.pc). A language whose toolchain (or prefix) is
missing is skipped, unless GQA_LAYOUT_REQUIRE_ALL=1 (CI), which turns each skip into a failure.
"""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ffi_module = pytest.importorskip("gqa._ffi")
ffi, lib = ffi_module.ffi, ffi_module.lib

ROOT = Path(__file__).resolve().parents[2]
STRUCTS = ("gqa_prefill_config", "gqa_decode_config", "gqa_strides", "gqa_merge_config", "gqa_batch_config")
REQUIRE_ALL = os.environ.get("GQA_LAYOUT_REQUIRE_ALL") == "1"


def cffi_layout():
    layout = {}
    for name in STRUCTS:
        fields = {field: info.offset for field, info in ffi.typeof(name).fields}
        layout[name] = {"size": ffi.sizeof(name), "fields": fields}
    return layout


def missing(reason):
    if REQUIRE_ALL:
        pytest.fail(f"{reason} (GQA_LAYOUT_REQUIRE_ALL=1)")
    pytest.skip(reason)


def prefix():
    value = os.environ.get("GQA_PREFIX")
    if not value or not (Path(value) / "include" / "gqa.h").is_file():
        missing("GQA_PREFIX does not name an installed libgqa")
    return Path(value)


def run(cmd, cwd, env=None, timeout=600):
    done = subprocess.run(cmd, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def c_layout(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        missing("no C compiler")
    exe = tmp_path / "gqa_layout"
    # Only the header is needed: the program calls nothing in libgqa.
    subprocess.run([compiler, "-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror",
                    f"-I{ROOT / 'include'}", str(ROOT / "examples/c/gqa_layout.c"), "-o", str(exe)],
                   check=True, timeout=120)
    return run([str(exe)], tmp_path)


def rust_layout(tmp_path):
    if not shutil.which("cargo"):
        missing("cargo not found")
    libdir = prefix() / "lib"
    env = {"GQA_LIB_DIR": str(libdir),
           "CARGO_TARGET_DIR": os.environ.get("GQA_CARGO_TARGET_DIR", str(tmp_path / "target"))}
    return run(["cargo", "run", "--quiet", "--offline", "--bin", "gqa-layout"],
               ROOT / "examples/rust", env)


def go_layout(tmp_path):
    if not shutil.which("go") or not shutil.which("pkg-config"):
        missing("go or pkg-config not found")
    root = prefix()
    env = {"PKG_CONFIG_PATH": str(root / "lib/pkgconfig"), "CGO_ENABLED": "1",
           "LD_LIBRARY_PATH": str(root / "lib"), "GOFLAGS": "-mod=mod", "GOPROXY": "off",
           # go reuses a cached cgo package even when pkg-config's answer changed, linking it
           # with the -L of whatever prefix built it first, which may be gone: a cache of its own.
           "GOCACHE": str(tmp_path / "go-cache")}
    return run(["go", "run", "./cmd/gqa-layout"], ROOT / "examples/go", env)


def test_library_and_cffi_agree_on_struct_size():
    """The size libgqa was compiled with (the newest it publishes) is the size cffi sees: the
    sized initializers take it; the plain ones of the ABI-1 configs write the ABI-1 size."""
    for name, abi1_size in (("gqa_prefill_config", 56), ("gqa_decode_config", 72)):
        config = ffi.new(f"{name}*")
        assert getattr(lib, name + "_init_sized")(config, ffi.sizeof(name)) == lib.GQA_STATUS_OK
        assert config.struct_size == ffi.sizeof(name)
        assert config.abi_version == lib.gqa_abi_version()
        assert config.window_left == -1 and config.window_right == -1
        getattr(lib, name + "_init")(config)
        assert config.struct_size == abi1_size
    # The structs new in 0.2 have only a sized initializer: they will grow.
    for name in ("gqa_merge_config", "gqa_batch_config"):
        assert not hasattr(lib, name + "_init")
        config = ffi.new(f"{name}*")
        assert getattr(lib, name + "_init_sized")(config, ffi.sizeof(name)) == lib.GQA_STATUS_OK
        assert config.struct_size == ffi.sizeof(name) and config.abi_version == lib.gqa_abi_version()
        assert getattr(lib, name + "_init_sized")(config, 12) == lib.GQA_STATUS_VERSION_MISMATCH
    config = ffi.new("gqa_batch_config*")
    assert lib.gqa_batch_config_init_sized(config, ffi.sizeof("gqa_batch_config")) == lib.GQA_STATUS_OK
    assert config.window_left == -1 and config.causal == 1


@pytest.mark.parametrize("language", ["c", "rust", "go"])
def test_layout_matches_cffi(language, tmp_path):
    got = {"c": c_layout, "rust": rust_layout, "go": go_layout}[language](tmp_path)
    want = cffi_layout()
    for name in STRUCTS:
        assert got[name]["size"] == want[name]["size"], f"{language}: sizeof({name})"
        # Same names (a field added to gqa.h but not to the binding fails here) and offsets.
        assert got[name]["fields"] == want[name]["fields"], f"{language}: fields of {name}"
