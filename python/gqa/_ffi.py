"""cffi (ABI mode) binding of libgqa.

The declarations come from the shipped ``gqa.h`` itself, between its GQA_CDEF_BEGIN and
GQA_CDEF_END markers, so Python can never drift from the C header. C log messages reach
``logging.getLogger("gqa")`` through ``_logging``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import cffi

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_HEADER = _PACKAGE_DIR.parent.parent / "include" / "gqa.h"

def _find_header() -> Path:
    for candidate in (_PACKAGE_DIR / "include" / "gqa.h", _REPO_HEADER):
        if candidate.is_file():
            return candidate
    raise ImportError(f"gqa: cannot find gqa.h (looked in {_PACKAGE_DIR / 'include'} and {_REPO_HEADER})")


def _find_library() -> str:
    env = os.environ.get("GQA_LIBRARY")
    if env:
        if not Path(env).is_file():
            raise ImportError(f"gqa: GQA_LIBRARY={env!r} is not a file")
        return env
    for pattern in ("libgqa.so", "libgqa.so.*", "libgqa.dylib", "gqa.dll"):
        found = sorted(_PACKAGE_DIR.glob(pattern))
        if found:
            return str(found[0])
    raise ImportError(
        f"gqa: libgqa.so is not installed next to {__file__}; install the package with "
        "`pip install .` or point GQA_LIBRARY at a built libgqa.so"
    )


def cdef_from_header(text: str) -> str:
    """The part of gqa.h that cffi parses: declarations and integer #defines, nothing else."""
    match = re.search(r"/\* GQA_CDEF_BEGIN \*/(.*?)/\* GQA_CDEF_END \*/", text, re.S)
    if not match:
        raise ImportError("gqa: gqa.h has no GQA_CDEF_BEGIN/GQA_CDEF_END section")
    body = re.sub(r"/\*.*?\*/", " ", match.group(1), flags=re.S)  # comments
    lines = []
    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            if re.fullmatch(r"#define\s+\w+\s+-?\d+", stripped):
                lines.append(stripped)
            continue
        lines.append(line.replace("GQA_API", ""))
    return "\n".join(lines)


HEADER_PATH = _find_header()
ffi = cffi.FFI()
ffi.cdef(cdef_from_header(HEADER_PATH.read_text()))
LIBRARY_PATH = _find_library()
lib = ffi.dlopen(LIBRARY_PATH)

if lib.gqa_abi_version() != lib.GQA_ABI_VERSION:
    raise ImportError(
        f"gqa: {LIBRARY_PATH} has ABI version {lib.gqa_abi_version()}, but {HEADER_PATH} "
        f"declares {lib.GQA_ABI_VERSION}; reinstall the package"
    )



def last_error() -> str:
    return ffi.string(lib.gqa_last_error()).decode("utf-8", "replace")
