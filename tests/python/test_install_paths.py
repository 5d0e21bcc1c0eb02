"""gqa.get_include(), gqa.get_library() and `python -m gqa --cflags --libs`: a C program built
with those flags alone compiles, links and runs (the rpath finds libgqa, no LD_LIBRARY_PATH)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gqa
from gqa._ffi import LIBRARY_PATH

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "c" / "gqa_example.c"


def test_paths_name_the_header_and_the_loaded_library():
    assert (Path(gqa.get_include()) / "gqa.h").is_file()
    assert Path(gqa.get_library()) == Path(LIBRARY_PATH).resolve()
    assert Path(gqa.get_library_dir()) == Path(gqa.get_library()).parent


def flags(*names):
    out = subprocess.run([sys.executable, "-m", "gqa", *names], capture_output=True, text=True, timeout=60,
                         check=True)
    return out.stdout.split()


def test_a_c_program_builds_and_runs_with_the_printed_flags(tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        pytest.skip("no C compiler")
    assert flags("--include-dir") == [gqa.get_include()] and flags("--library") == [gqa.get_library()]
    exe = tmp_path / "example"
    subprocess.run([compiler, "-std=c99", str(EXAMPLE), *flags("--cflags", "--libs"), "-lm", "-o", str(exe)],
                   check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "GQA_LIBRARY")}
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("OK")
