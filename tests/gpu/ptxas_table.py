#!/usr/bin/env python3
"""ptxas_table.py BUILD_LOG [BUILD_LOG_BEFORE]: the `-Xptxas -v` figures of every libgqa kernel
in a CUDA build log, one row per (kernel, arch): registers, spill bytes, stack frame; with a
second log, the registers before it too (a kernel that gained a template parameter, e.g. the
ring depth, is matched to the kernel of the same dtype and head_dim). Exit status 1 when any kernel spills or uses a stack
frame. Build with CMAKE_CUDA_FLAGS="-Xptxas -v" (tests/gpu/run.sh does)."""
import re
import subprocess
import sys

ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
REGS = re.compile(r"Used (\d+) registers")


def demangle(names):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.split("\n")
    short = {}
    for mangled, full in zip(names, out):
        full = full.replace("gqa::gpu::", "").replace("__nv_bfloat16", "bf16").replace("__half", "f16")
        short[mangled] = re.sub(r"\(.*\)$", "", full)
    return short


def parse(path):
    rows, entry, frame = {}, None, None
    for line in open(path, errors="replace"):
        if m := ENTRY.search(line):
            entry, frame = (m.group(1), m.group(2)), None
        elif entry and (m := FRAME.search(line)):
            frame = tuple(int(x) for x in m.groups())
        elif entry and (m := REGS.search(line)):
            rows[entry] = (int(m.group(1)),) + (frame or (0, 0, 0))
            entry = None
    return rows


def main():
    now = parse(sys.argv[1])
    before = parse(sys.argv[2]) if len(sys.argv) > 2 else {}
    names = demangle(sorted({k for k, _ in now} | {k for k, _ in before}))
    old_by_name = {(names[k], arch): v for (k, arch), v in before.items()}

    def old_regs(name, arch):
        old = old_by_name.get((name, arch)) or old_by_name.get((re.sub(r", \d+>$", ">", name), arch))
        return old[0] if old else ""

    bad = 0
    print(f"{'kernel':58} {'arch':6} {'regs':>4} {'before':>6} {'stack':>5} {'spill st/ld':>11}")
    for (k, arch), (regs, stack, st, ld) in sorted(now.items(), key=lambda r: (names[r[0][0]], r[0][1])):
        bad += stack > 0 or st > 0 or ld > 0
        print(f"{names[k]:58} {arch:6} {regs:4} {old_regs(names[k], arch):>6} {stack:5} {st:5}/{ld:<5}")
    print(f"{len(now)} kernel builds, {bad} with a stack frame or spills")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
