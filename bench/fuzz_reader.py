"""The DICOM reader under fuzzing: N seeded mutants (default 10,000) read in child processes, as an outcome table.

Mutants come from `tests/fuzz_corpus.py`: one small file per transfer syntax mammokit reads, each mutant made by one
of its mutators (byte flips, cuts, tags with wrong VRs or absurd values, element lengths, another transfer syntax,
huge ViewCodeSequences, broken Modality LUTs, RLE offsets, JPEG / JPEG 2000 frame headers, cut or re-fragmented
streams). Mutant k is (syntax k % 13, index k // 13) of `--seed`, so any run can be repeated or extended with
`--start`. `tests/fuzz_harness.py` reads each mutant twice (pixels, then header only) in `--workers` children, with
`--timeout` seconds per read; a hang is killed and a dead child replaced, and the read that did it is named.

Prints the outcome table (Markdown, the rows of issue 13) and every read that was not clean; exits 1 when any row
other than "clean" is non-zero. `--keep DIR` writes those mutants to DIR to reproduce them.

Run: `.venv/bin/python bench/fuzz_reader.py [-n 10000] [--workers 2] [--seed 0] [--timeout 20] [--max-items 100000]`
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fuzz_corpus import mutant, spread, write_bases  # noqa: E402
from fuzz_harness import failures, run, table  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--mutants", type=int, default=10_000, help="mutants to read (default 10,000)")
    parser.add_argument("--start", type=int, default=0, help="first mutant number (to extend an earlier run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="child processes reading in parallel")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds a read may take before it is a hang")
    parser.add_argument("--max-items", type=int, default=100_000, help="most items of a mutated ViewCodeSequence")
    parser.add_argument("--reader", default="mammokit.dicom:read_dicom", help="module:function to fuzz")
    parser.add_argument("--keep", type=Path, help="write the mutants whose reads were not clean here")
    parser.add_argument("--list", type=int, default=50, help="how many non-clean reads to list")
    return parser.parse_args(argv)


def _keep(results: list, bases: Path, folder: Path, seed: int, max_items: int) -> None:
    bad = sorted({(r.syntax, r.index) for r in results if r.outcome != "clean"})
    folder.mkdir(parents=True, exist_ok=True)
    for syntax, index in bad:
        name, data = mutant((bases / f"base-{syntax:02d}.dcm").read_bytes(), syntax, index, seed, max_items)
        (folder / f"seed{seed}-{syntax:02d}-{index}-{name.replace(' ', '_')}.dcm").write_bytes(data)
    print(f"{len(bad)} non-clean mutants written to {folder}")


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.monotonic()

    def progress(done: int) -> None:
        if done % 500 == 0:
            print(f"  {done:,}/{args.mutants:,} mutants, {time.monotonic() - started:.0f} s", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="mammokit-fuzz-") as tmp:
        bases = Path(tmp) / "bases"
        write_bases(bases)
        results = run(spread(args.mutants, args.start), bases, Path(tmp) / "work", seed=args.seed,
                      workers=args.workers, timeout=args.timeout, max_items=args.max_items, reader=args.reader,
                      progress=progress)
        if args.keep is not None:
            _keep(results, bases, args.keep, args.seed, args.max_items)
    elapsed = time.monotonic() - started
    print(f"{args.mutants:,} mutants (seed {args.seed}, from {args.start}), {len(results):,} reads, "
          f"{args.workers} workers, {elapsed:.0f} s\n")
    print(table(results, args.timeout))
    bad = failures(results, limit=args.list)
    if bad:
        print("\nnot clean:\n" + "\n".join(bad))
    return 1 if any(r.outcome != "clean" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
