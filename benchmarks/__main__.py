"""`python -m benchmarks [--only a,b] [--quick]`: run the benchmarks, print tables, write docs/performance.md.

Only a full run (every benchmark, full sizes) rewrites the doc: a partial or quick run would
replace good numbers with incomplete or small-input ones. A benchmark that crashes is reported
as such and the others still run; the exit status is non-zero if anything crashed or a
correctness check (not a timing target) failed.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
import traceback
from types import ModuleType

from benchmarks import cluster, conversion, download, jpeg, loader, memory, reading, report, startup
from benchmarks.common import Table, background_load
from benchmarks.inputs import Workspace

BENCHMARKS: dict[str, ModuleType] = {m.NAME: m for m in (conversion, reading, loader, cluster, jpeg, download, memory, startup)}
QUICK_SCALE = 0.1
BUSY = 0.15  # cores of background load above which timings are flagged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=_names, default=list(BENCHMARKS),
                        help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"inputs at {QUICK_SCALE:g} of full size, a smoke run; never writes the doc")
    parser.add_argument("--tmpdir", default=None, help="where temporary inputs and outputs go (default: $TMPDIR)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # thresher logs warnings for expected situations; keep output clean

    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.perf_counter()
    ws = Workspace(QUICK_SCALE if args.quick else 1.0, args.tmpdir)
    tables: list[Table] = []
    crashed = False
    try:
        for name in args.only:
            print(f"== {name} ...", flush=True)
            load = background_load()
            begun = time.perf_counter()
            try:
                table = BENCHMARKS[name].run(ws, args.quick)
            except Exception as exc:  # report it and go on with the other benchmarks
                crashed = True
                table = Table(name, f"{name} (CRASHED)")
                table.failures.append(f"crashed: {type(exc).__name__}: {exc}")
                traceback.print_exc()
            table.seconds = time.perf_counter() - begun
            after = background_load()
            table.notes.append(f"Other work on the machine (cores busy while the suite slept 1 s): {load:.2f} before "
                               f"this benchmark, {after:.2f} after"
                               + (" — WARNING: timings may be disturbed." if max(load, after) > BUSY else "."))
            tables.append(table)
            print(f"{table.markdown()}\n\n({table.seconds:.0f} s)\n", flush=True)
            if table.analysis:
                print("\n".join(["Analysis:", "", *table.analysis]), flush=True)
    finally:
        ws.close()
    seconds = time.perf_counter() - clock
    misses = [m for t in tables for m in t.missed()]
    print(f"== done in {seconds / 60:.1f} min; {len(misses)} target(s) missed")
    for miss in misses:
        print(f"   {miss}")
    if args.quick or args.only != list(BENCHMARKS):
        print(f"   {report.DOC.relative_to(report.REPO)} not written ({'quick' if args.quick else 'partial'} run)")
    else:
        path = report.write(tables, started=started, seconds=seconds)
        print(f"   wrote {path.relative_to(report.REPO)}")
    failed = crashed or any(t.failures for t in tables)
    return 1 if failed else 0


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {unknown}; choose from {','.join(BENCHMARKS)}")
    return [n for n in BENCHMARKS if n in names]  # suite order, each once


if __name__ == "__main__":
    sys.exit(main())
