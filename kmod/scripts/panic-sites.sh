#!/usr/bin/env bash
# Lists the panic call sites left in a module object: every call or jump
# (relocated or not) from its code to a panicking function of `core`
# (core::panicking::*, bounds checks, slice_*_fail, unwrap_failed,
# expect_failed, ...), to rust_begin_unwind/BUG-like symbols, plus ud2 traps.
#
#   bash kmod/scripts/panic-sites.sh [--max N] strata.ko
#
# Prints "<section>+<offset> <function> -> <panic function>" per site, then a
# per-target summary and "panic sites: N". With --max N it fails (exit 1)
# when more than N sites are left; without it, it only reports.
set -euo pipefail

max=
while (($#)); do
    case $1 in
    --max) max=$2; shift 2 ;;
    -*) echo "usage: $0 [--max N] MODULE.ko" >&2; exit 2 ;;
    *) break ;;
    esac
done
(($# == 1)) || { echo "usage: $0 [--max N] MODULE.ko" >&2; exit 2; }
obj=$1
[[ -f $obj ]] || { echo "panic-sites.sh: no $obj" >&2; exit 2; }
objdump=
for candidate in /usr/lib/llvm-19/bin/llvm-objdump llvm-objdump-19 llvm-objdump; do
    if command -v "$candidate" >/dev/null; then
        objdump=$(command -v "$candidate")
        break
    fi
done
[[ -n $objdump ]] || { echo "panic-sites.sh: llvm-objdump not found" >&2; exit 2; }

"$objdump" -d -r --demangle --no-show-raw-insn "$obj" | MAX="$max" python3 -c '
import os, re, sys
from collections import Counter

# Demangled names (v0 or legacy mangling; legacy keeps a ::h<hash> suffix).
panic_re = re.compile(
    r"(^|\W)("
    r"core(\[[0-9a-f]+\])?::(panicking|slice::index|str|result|option|cell|char|fmt::rt)::[\w:]*?"
    r"(panic|_fail|fail_|unwrap_failed|expect_failed|assert_failed|already_borrowed|already_mutably_borrowed)\w*"
    r"|rust_begin_unwind|rust_panic\w*|__rust_start_panic|BUG\w*|__ubsan_handle\w*"
    r")")

section = func = None
sites = []
lines = sys.stdin.read().splitlines()
for i, line in enumerate(lines):
    m = re.match(r"^Disassembly of section (\S+):", line)
    if m:
        section = m.group(1).rstrip(":")
        continue
    m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
    if m:
        func = m.group(2)
        continue
    m = re.match(r"^\s+([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
    if not m or func is None:
        continue
    addr, mnemonic, operands = m.groups()
    if re.match(r"^\s+[0-9a-f]+:\s+R_", line):
        continue
    target = None
    nxt = lines[i + 1] if i + 1 < len(lines) else ""
    r = re.match(r"^\s+[0-9a-f]+:\s+(R_\S+)\s+(.*?)(?:[-+]0x[0-9a-f]+)?$", nxt)
    if mnemonic.startswith(("call", "jmp", "j")) or r:
        if r and panic_re.search(r.group(2)):
            target = r.group(2)
        elif not r and mnemonic.startswith(("call", "jmp")):
            t = re.search(r"<(.*?)(?:\+0x[0-9a-f]+)?>", operands)
            if t and panic_re.search(t.group(1)) and not panic_re.search(func):
                target = t.group(1)
    elif mnemonic == "ud2":
        target = "ud2 (BUG/WARN/trap)"
    if target:
        sites.append((section, addr, func, target))

short = lambda s: re.sub(r"\[[0-9a-f]+\]", "", s)
for section, addr, func, target in sites:
    print(f"{section}+0x{int(addr, 16):x} {short(func)} -> {short(target)}")
print("--- by panic function:")
for target, n in Counter(short(t) for *_, t in sites).most_common():
    print(f"{n:6d} {target}")
print(f"panic sites: {len(sites)}")
max_ = os.environ.get("MAX", "")
if max_ and len(sites) > int(max_):
    print(f"panic-sites.sh: FAIL: {len(sites)} panic sites, more than --max {max_}")
    sys.exit(1)
'
