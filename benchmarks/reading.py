"""Benchmark 2: reading a whole split back into NumPy, on one core, against an in-memory ceiling.

Sequential: ``ds.batches(256, shuffle=False)``. Random: ``ds[i]`` over a shuffled order. The
ceiling does the same with the split preloaded in a NumPy array: copy out 256-row slices,
or one row (plus its label) at a time. The datasets are prepared here with two cores; the
reading runs in a child process pinned to CPU 0 (``os.sched_setaffinity``), so other
benchmarks keep both cores. Run as ``python -m benchmarks.reading SPEC.json`` it is that child.
Targets (issue): sequential ≥ 1,000,000 MNIST and ≥ 200,000 CIFAR records/s, random
≥ 300,000 MNIST records/s, for every format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import Table, Target, best_time, number, rate
from benchmarks.inputs import Workspace

NAME = "reading"
FORMATS = ("lmdb", "minidb", "hdf5")
BATCH = 256
MODES = ("sequential", "random")
TARGETS = {
    ("MNIST", "sequential"): Target(1_000_000, at_least=True, unit=" rec/s"),
    ("CIFAR-10", "sequential"): Target(200_000, at_least=True, unit=" rec/s"),
    ("MNIST", "random"): Target(300_000, at_least=True, unit=" rec/s"),
}
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Job:
    """One split to read: which dataset, format and directory."""

    dataset: str
    fmt: str
    path: str


def run(ws: Workspace, quick: bool) -> Table:
    table = Table(NAME, "Reading a whole train split into NumPy on one core")
    jobs = []
    for dataset, inputs in (("MNIST", ws.mnist()), ("CIFAR-10", ws.cifar10())):
        for fmt in FORMATS:
            jobs.append(Job(dataset, fmt, str(ws.prepared(inputs, fmt) / "train")))
    spec = {"jobs": [asdict(j) for j in jobs], "repeats": 2 if quick else 5}
    spec_path = ws.fresh("reading-spec") / "spec.json"
    spec_path.write_text(json.dumps(spec))
    child = subprocess.run([sys.executable, "-m", "benchmarks.reading", str(spec_path)], cwd=REPO,
                           capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise RuntimeError(f"reading child failed ({child.returncode}):\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    for measured in result["measurements"]:
        dataset, mode = measured["dataset"], measured["mode"]
        ceiling = result["ceilings"][dataset][mode]
        value = measured["records"] / measured["seconds"]
        target = TARGETS.get((dataset, mode))
        row = table.add(
            f"{dataset} train ({measured['records']:,}) · {measured['fmt']} · {_describe(mode)}",
            rate(measured["records"], measured["seconds"], "rec"),
            f"ceiling {number(ceiling)} rec/s", None, f"{value / ceiling:.1%} of the ceiling",
        )
        if target is not None:
            row.target, row.met = target.describe(), target.verdict(value)
    for dataset in ("MNIST", "CIFAR-10"):
        for issue in result["problems"].get(dataset, []):
            table.failures.append(f"{dataset}: {issue}")
    table.notes += [
        f"Sequential: `for batch in ds.batches({BATCH}, shuffle=False)`; random: `ds[i]` for every i of a "
        f"seeded permutation; best of {spec['repeats']} passes over the whole split (fewer once 5 s are spent); "
        "a child process pinned to CPU 0 does all reading.",
        f"Ceiling: the split preloaded as a uint8 (N, H, W, C) array and int64 labels; sequential copies "
        f"{BATCH}-row slices of both, random copies one row and its label into a dict per record.",
        "Targets apply to the records/s column; the ratio to the ceiling is for information.",
        f"Child CPU affinity: {result['affinity']}.",
    ]
    table.analysis += result["analysis"]
    for inputs in (ws.mnist(), ws.cifar10()):
        ws.release_prepared(inputs)
    return table


def _describe(mode: str) -> str:
    return f"sequential `batches({BATCH})`" if mode == "sequential" else "random `ds[i]`"


# -- the pinned child ------------------------------------------------------------------------------


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Measure every job on CPU 0; return measurements, ceilings, problems and profile facts."""
    import thresher
    from benchmarks.profiling import facts, profile

    os.sched_setaffinity(0, {0})
    repeats = int(spec["repeats"])
    measurements: list[dict[str, Any]] = []
    ceilings: dict[str, dict[str, float]] = {}
    problems: dict[str, list[str]] = {}
    references: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for raw in spec["jobs"]:
        job = Job(**raw)
        ds = thresher.open(job.path)
        n = len(ds)
        if job.dataset not in ceilings:
            images, labels = _preload(ds)
            ceilings[job.dataset] = _ceilings(images, labels, _order(n), repeats)
            problems[job.dataset] = []
            references[job.dataset] = (images, labels)
        for mode in MODES:
            seconds = best_time(_pass(ds, mode), repeats=repeats, budget=5.0)
            measurements.append({"dataset": job.dataset, "fmt": job.fmt, "mode": mode, "records": n,
                                 "seconds": seconds, "path": job.path})
        counted = sum(len(batch["label"]) for batch in ds.batches(BATCH, shuffle=False))
        if counted != n:
            problems[job.dataset].append(f"{job.fmt}: batches() gave {counted:,} records, len() says {n:,}")
        if not _matches(ds, references[job.dataset]):
            problems[job.dataset].append(f"{job.fmt}: records differ from the {FORMATS[0]} split's")
        ds.close()
    # Profile the reference pair (MNIST, first format) and whatever came out furthest below its ceiling.
    chosen = [m for m in measurements if m["dataset"] == "MNIST" and m["fmt"] == FORMATS[0]]
    worst = min(measurements, key=lambda m: m["records"] / m["seconds"] / ceilings[m["dataset"]][m["mode"]])
    if worst not in chosen:
        chosen.append(worst)
    analysis: list[str] = []
    for m in chosen:
        ds = thresher.open(m["path"])
        _, stats = profile(_pass(ds, m["mode"]))
        ds.close()
        share = m["records"] / m["seconds"] / ceilings[m["dataset"]][m["mode"]]
        why = " (the measurement furthest below its ceiling)" if m is worst else ""
        analysis += facts(f"{m['dataset']} {m['fmt']} {_describe(m['mode'])}, {m['records']:,} records, "
                          f"{share:.1%} of the ceiling{why}", stats)
    return {"measurements": measurements, "ceilings": ceilings, "problems": problems, "analysis": analysis,
            "affinity": sorted(os.sched_getaffinity(0))}


def _order(n: int) -> list[int]:
    return np.random.default_rng(0).permutation(n).tolist()


def _pass(ds: Any, mode: str) -> Callable[[], None]:
    """One whole-split pass in ``mode``, as a function for the timer or the profiler."""
    if mode == "sequential":
        def sequential() -> None:
            for _ in ds.batches(BATCH, shuffle=False):
                pass
        return sequential
    order = _order(len(ds))

    def random_access() -> None:
        for i in order:
            ds[i]
    return random_access


def _preload(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    batches = list(ds.batches(4096, shuffle=False))
    return np.concatenate([b["image"] for b in batches]), np.concatenate([b["label"] for b in batches])


def _ceilings(images: np.ndarray, labels: np.ndarray, order: list[int], repeats: int) -> dict[str, float]:
    n = len(labels)

    def sequential() -> None:
        for start in range(0, n, BATCH):
            {"image": images[start:start + BATCH].copy(), "label": labels[start:start + BATCH].copy()}

    def random_access() -> None:
        for i in order:
            {"image": images[i].copy(), "label": int(labels[i])}

    return {mode: n / best_time(func, repeats=repeats, budget=5.0)
            for mode, func in (("sequential", sequential), ("random", random_access))}


def _matches(ds: Any, reference: tuple[np.ndarray, np.ndarray]) -> bool:
    """Spot check (first, middle, last record) that this format holds the same records."""
    images, labels = reference
    for i in (0, len(ds) // 2, len(ds) - 1):
        record = ds[i]
        if not (np.array_equal(record["image"], images[i]) and int(record["label"]) == int(labels[i])):
            return False
    return True


if __name__ == "__main__":
    print(json.dumps(child(json.loads(Path(sys.argv[1]).read_text()))))
