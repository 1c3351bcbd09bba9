"""How fast do we hash a large source? Ours vs the digests other tools use, in GB/s.

Hashes one synthetic file (default 2 GB) with

  * ours: BLAKE3 exactly as DigestCache hashes a file (`llmbuild.core.digests.hash_file`),
    on one thread and on every CPU this process may use;
  * md5 (doit's file_dep checker, DVC) and sha256 (llmbuild before BLAKE3), through hashlib.

The file is written once under the temp directory and reused by later runs of the same
size; it is read once before timing, so the figures are hashing from the page cache, not
the disk. Each method runs `repeat` times: GB/s is of the fastest run (others' load on a
shared machine only slows a run down), the median is kept too.

Usage: python benchmarks/hash_throughput.py [--size-gb 2] [--repeat 5]
Prints one line per method and writes benchmarks/results/hash_throughput.json.
`benchmarks/run.py` calls `measure(size_bytes)`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import blake3  # noqa: E402

from llmbuild.core import digests  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "hash_throughput.json"
BLOCK = 4 << 20


def synthetic_file(size_bytes: int) -> Path:
    """A file of `size_bytes` random-looking bytes, written once (none of these hashes is faster
    on repeated content, so one random block is repeated)."""
    path = Path(tempfile.gettempdir()) / "llmbuild-hash-throughput" / f"{size_bytes}.bin"
    if path.is_file() and path.stat().st_size == size_bytes:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")  # an interrupted write is never reused
    block = os.urandom(BLOCK)
    with open(partial, "wb") as handle:
        for offset in range(0, size_bytes, BLOCK):
            handle.write(block[:min(BLOCK, size_bytes - offset)])
    partial.replace(path)
    return path


def _hashlib(name: str) -> Callable[[Path], str]:
    def digest(path: Path) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, name).hexdigest()
    return digest


def methods() -> list[tuple[str, int, Callable[[Path], str]]]:
    """(method, threads, hash a path): ours first."""
    cpus = len(os.sched_getaffinity(0))
    ours = [("blake3 (ours)", n, lambda path, n=n: digests.hash_file(path, threads=n))
            for n in sorted({1, cpus})]
    return ours + [("md5", 1, _hashlib("md5")), ("sha256", 1, _hashlib("sha256"))]


def measure(size_bytes: int, repeat: int = 5) -> dict:
    """Throughput of each method on a synthetic file of `size_bytes`: the JSON this script writes."""
    path = synthetic_file(size_bytes)
    with open(path, "rb") as handle:  # into the page cache
        while handle.read(BLOCK):
            pass
    rows = []
    for method, threads, digest in methods():
        seconds = []
        for _ in range(repeat):
            start = time.perf_counter()
            digest(path)
            seconds.append(time.perf_counter() - start)
        rows.append({"method": method, "threads": threads, "seconds": round(min(seconds), 4),
                     "median_seconds": round(statistics.median(seconds), 4),
                     "gb_per_s": round(size_bytes / min(seconds) / 1e9, 3)})
    return {"size_bytes": size_bytes, "repeat": repeat, "cpus": len(os.sched_getaffinity(0)),
            "machine": platform.machine(), "python": platform.python_version(),
            "blake3": blake3.__version__, "load_average": [round(x, 2) for x in os.getloadavg()],
            "results": rows}


def table(result: dict) -> str:
    lines = [f"hash throughput, {result['size_bytes'] / 1e9:.1f} GB file from the page cache, "
             f"best of {result['repeat']} ({result['cpus']} CPUs, load {result['load_average'][0]})",
             f"  {'method':<16}{'threads':>8}{'GB/s':>8}{'median s':>10}"]
    for row in result["results"]:
        lines.append(f"  {row['method']:<16}{row['threads']:>8}{row['gb_per_s']:>8.2f}"
                     f"{row['median_seconds']:>10.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.0, help="size of the synthetic file (GB, 10^9 bytes)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per method; the fastest counts")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    result = measure(int(args.size_gb * 1e9), repeat=args.repeat)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
