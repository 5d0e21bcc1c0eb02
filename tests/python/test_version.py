"""The version has one home, include/gqa.h (GQA_VERSION_MAJOR/MINOR/PATCH); every other view
of it is derived from there and must agree: gqa_version_string() / gqa_version_number() of the
library, gqa.__version__, the regex pyproject.toml gives scikit-build-core (the wheel's name and
metadata), the CMake package (gqaConfigVersion.cmake), pkg-config's gqa.pc and the library's file
name. The CMake and pkg-config files are read next to the loaded library (a build tree) and under
GQA_PREFIX (a `cmake --install` prefix) when set; the callers suite also checks the built wheel."""

import importlib.metadata
import os
import re
from pathlib import Path

import pytest

import gqa
from gqa._ffi import ffi, lib

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("MAJOR", "MINOR", "PATCH")


def header_version(header=Path(gqa.get_include()) / "gqa.h"):
    text = header.read_text()
    numbers = []
    for part in PARTS:
        found = re.findall(rf"^#define GQA_VERSION_{part} (\d+)$", text, re.MULTILINE)
        assert len(found) == 1, f"{header}: want one GQA_VERSION_{part} line, found {found}"
        numbers.append(int(found[0]))
    return numbers


def dotted(numbers):
    return ".".join(map(str, numbers))


def test_library_and_package_report_the_header_version():
    major, minor, patch = header_version()
    assert (lib.GQA_VERSION_MAJOR, lib.GQA_VERSION_MINOR, lib.GQA_VERSION_PATCH) == (major, minor, patch)
    assert ffi.string(lib.gqa_version_string()).decode() == dotted([major, minor, patch])
    assert lib.gqa_version_number() == major * 10000 + minor * 100 + patch
    assert gqa.__version__ == gqa.version() == dotted([major, minor, patch])


def test_pyproject_reads_the_version_from_the_header():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    settings = project["tool"]["scikit-build"]["metadata"]["version"]
    assert settings["provider"] == "scikit_build_core.metadata.regex"
    header = ROOT / settings["input"]
    # What scikit-build-core does with these settings: re.search(regex, text, MULTILINE), then
    # result.format(**groupdict()).
    match = re.search(settings["regex"], header.read_text(), re.MULTILINE)
    assert match, f"pyproject.toml's regex finds nothing in {header}"
    assert settings["result"].format(*match.groups(), **match.groupdict()) == dotted(header_version(header))


def test_installed_distribution_has_the_header_version():
    try:
        dist = importlib.metadata.distribution("libgqa")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("libgqa is not installed as a distribution (gqa runs from a checkout)")
    init = Path(gqa.__file__).resolve()
    if not any(Path(dist.locate_file(f)).resolve() == init for f in dist.files or []):
        pytest.skip(f"the imported gqa ({init}) is not the installed libgqa distribution's")
    assert dist.version == dotted(header_version())


def package_files():
    """gqaConfigVersion.cmake and gqa.pc of the build tree of the loaded library, the wheel's
    gqa.pc (gqa/pkgconfig/), and those of GQA_PREFIX."""
    folders = [Path(gqa.get_library_dir())]
    if gqa.get_pkg_config_dir():
        folders.append(Path(gqa.get_pkg_config_dir()))
    if os.environ.get("GQA_PREFIX"):
        lib_dir = Path(os.environ["GQA_PREFIX"]) / "lib"
        folders += [lib_dir / "cmake" / "gqa", lib_dir / "pkgconfig"]
    return [path for folder in folders for path in (folder / "gqaConfigVersion.cmake", folder / "gqa.pc")
            if path.is_file()]


def test_cmake_and_pkg_config_packages_have_the_header_version():
    files = package_files()
    if not files:
        pytest.skip("no CMake or pkg-config package next to the library, in the wheel or under GQA_PREFIX")
    want = dotted(header_version())
    for path in files:
        pattern = r'^set\(PACKAGE_VERSION "([^"]*)"\)$' if path.suffix == ".cmake" else r"^Version: (\S+)$"
        found = re.findall(pattern, path.read_text(), re.MULTILINE)
        assert found == [want], f"{path}: version {found}, gqa.h says {want}"


def test_library_file_name_has_the_header_version():
    name = Path(gqa.get_library()).name
    if not re.fullmatch(r"libgqa\.so\.\d+\.\d+\.\d+", name):
        pytest.skip(f"the library's file name ({name}) carries no version (a wheel's libgqa.so)")
    assert name == f"libgqa.so.{dotted(header_version())}"
