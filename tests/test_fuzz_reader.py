"""read_dicom under fuzzing: seeded mutants of every transfer syntax, each read in a child process.

The assertion is issue 13's outcome table: every read (pixels, and header only) ends in a `DicomReadError` naming the
file and a reason, or in finite float32 pixels of Rows x Columns; no foreign exception, no hang, no dead child. The
corpus is `tests/fuzz_corpus.py`, the harness `tests/fuzz_harness.py`; `bench/fuzz_reader.py` runs 10,000 the same way.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz_corpus import SYNTAXES, mutators, spread, write_bases
from fuzz_harness import counts, failures, run, table

SEED = 13
TIMEOUT_S = 15.0  # a small file is read in milliseconds; only a hang comes near this
FAST_MUTANTS = 8 * len(SYNTAXES)
SLOW_MUTANTS = 200 * len(SYNTAXES)


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz_bases")
    write_bases(folder)
    return folder


def _assert_all_clean(results: list, expected: int) -> None:
    assert len(results) == 2 * expected  # every mutant read twice, none lost
    bad = failures(results, limit=40)
    assert not bad, "\n".join([table(results, TIMEOUT_S), *bad])


def test_a_few_mutants_of_each_syntax_are_refused_or_read(bases, tmp_path):
    results = run(spread(FAST_MUTANTS), bases, tmp_path, seed=SEED, workers=2, timeout=TIMEOUT_S, max_items=2000)
    _assert_all_clean(results, FAST_MUTANTS)


@pytest.mark.slow
def test_reader_outcome_table_under_fuzzing(bases, tmp_path):
    """2,600 mutants spread over the 13 syntaxes; the corpus must reach the decoders, not just the parser."""
    mutants = spread(SLOW_MUTANTS, start=FAST_MUTANTS)
    results = run(mutants, bases, tmp_path, seed=SEED, workers=2, timeout=TIMEOUT_S, max_items=5000)
    _assert_all_clean(results, SLOW_MUTANTS)
    for syntax, uid in enumerate(SYNTAXES):
        reads = [r for r in results if r.syntax == syntax and r.pixels]
        decoded = sum(r.detail == "read" for r in reads)
        assert 0 < decoded < len(reads), f"{uid}: {decoded} of {len(reads)} mutants decoded"
        assert {r.mutator for r in reads} == set(mutators(uid)), uid


def test_harness_tells_every_outcome_apart(bases, tmp_path):
    """The table can fail: a reader that refuses, returns NaN, raises TypeError, hangs and segfaults (by mutant)."""
    results = run([(0, i) for i in range(5)], bases, tmp_path, seed=SEED, workers=2, timeout=2.0,
                  reader="fuzz_harness:misbehaving_reader")
    assert [r.outcome for r in results if r.pixels] == ["clean", "nonfinite", "foreign", "hang", "killed"]
    assert [r.outcome for r in results if not r.pixels] == ["clean", "nonfinite", "foreign", "hang", "killed"]
    assert "SIGSEGV" in results[-1].detail and "TypeError" in results[4].detail
    found = counts(results)
    assert found["hang"] == {True: 1, False: 1}
    assert "| hang > 2 s | 1 | 1 |" in table(results, 2.0)
