"""A progress bar on stderr: tqdm when installed, else a plain one-line counter."""
from __future__ import annotations

import sys


class _Plain:
    def __init__(self, total: int, desc: str):
        self.total, self.done, self.desc = total, 0, desc

    def set_postfix_str(self, text: str) -> None:
        self.text = text

    def update(self, n: int = 1) -> None:
        self.done += n
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
                         f" {getattr(self, 'text', '')[:50]:<50}")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


def progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return _Plain(total, desc)
    return tqdm(total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
