"""Where the installed header and library are, for C, C++, Rust and Go builds against a pip
install (``python -m gqa --cflags --libs``, or pkg-config with ``--pkg-config-path``)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ._ffi import HEADER_PATH, LIBRARY_PATH


def get_include() -> str:
    """The folder holding gqa.h (``-I`` for a C compiler)."""
    return str(HEADER_PATH.parent)


def get_library() -> str:
    """The path of the libgqa shared library this package loads."""
    return str(Path(LIBRARY_PATH).resolve())


def get_library_dir() -> str:
    """The folder holding libgqa.so (``-L`` and the rpath)."""
    return str(Path(get_library()).parent)


def get_pkg_config_dir() -> str | None:
    """The folder holding the wheel's gqa.pc (for PKG_CONFIG_PATH), or None in a checkout."""
    folder = Path(__file__).resolve().parent / "pkgconfig"
    return str(folder) if (folder / "gqa.pc").is_file() else None


def cflags() -> str:
    return f"-I{shlex.quote(get_include())}"


def libs() -> str:
    """Link flags, with an rpath so the program finds libgqa.so at run time."""
    folder = shlex.quote(get_library_dir())
    return f"-L{folder} -lgqa -Wl,-rpath,{folder}"
