"""The bulk import benchmark on a small scale: its export is what a CRM sends, and both
imports of it (first, then again) do what the file asks, through the worker process as the
big file does.

A smoke test, not a timed one: it asserts what was imported, never how fast.
"""

from __future__ import annotations

import csv
import io
from dataclasses import replace
from pathlib import Path

import pytest

from crm_sync.importer import COLUMNS
from cti_app.cli import build_parser
from cti_bench.imports import ExportFacts, ProgressLine, measure_import, write_customers_csv


def test_the_export_is_what_a_crm_sends(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    facts = write_customers_csv(path, 3000)
    with path.open(encoding="utf-8", newline="") as file:
        header, *rows = list(csv.reader(file))
    assert tuple(header) == COLUMNS and len(rows) == facts.rows == 3000
    cell = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    kinds = cell["kind"]
    assert kinds.count("company") == facts.companies and 100 <= facts.companies <= 200
    assert sum(1 for parent in cell["company_external_id"] if parent) == facts.contacts
    keys = cell["external_id"]
    early = [n for n, parent in enumerate(cell["company_external_id"]) if parent in keys[n + 1 :]]
    assert len(early) == facts.early_contacts >= 1  # contacts listed before their company
    assert facts.bad == 3  # rows 507, 1507, 2507
    phones = " ".join(cell["phones"])
    for spelling in ("+86 1", "0086", "(+86) ", "+44 20 7", "+1 (", "-"):
        assert spelling in phones
    assert sum(1 for row in cell["phones"] if ";" in row) > 500  # two numbers, often
    assert any("\n" in address for address in cell["address"])
    assert any('"' in name or "," in name for name in cell["name"])  # quoted in the CSV
    assert sum(1 for name in cell["name"] if "\u4e00" <= name[0] <= "\u9fff") > 1500
    assert sum(1 for stamp in cell["updated_at"] if stamp) > 2500
    assert {stamp[-6:] for stamp in cell["updated_at"] if stamp} == {
        "+00:00",
        "+08:00",
        "+01:00",
    }


@pytest.mark.parametrize("parallel_from", [1, 10**9], ids=["worker", "in-process"])
async def test_both_imports_do_what_the_file_asks(
    db_url: str, tmp_path: Path, parallel_from: int
) -> None:
    path = tmp_path / "customers.csv"
    facts = write_customers_csv(path, 2500)
    first, again = await measure_import(
        db_url, path, facts, progress=False, parallel_from=parallel_from
    )
    good = facts.rows - facts.bad
    assert (first.report.inserted, first.report.updated, first.report.unchanged) == (good, 0, 0)
    assert (again.report.inserted, again.report.updated, again.report.unchanged) == (0, 0, good)
    assert again.report.rejected == first.report.rejected
    assert {r.reason.split(":")[0] for r in first.report.rejected} == {"email", "phones"}
    assert first.rate > 0 and f"{good:,} new" in first.line()


async def test_an_import_that_differs_from_the_file_is_an_error(
    db_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "customers.csv"
    facts = write_customers_csv(path, 300)
    wrong: ExportFacts = replace(facts, phones=facts.phones + 1)
    with pytest.raises(RuntimeError, match="did not do what the file asks"):
        await measure_import(db_url, path, wrong, progress=False)


def test_progress_is_one_line_redrawn_per_percent() -> None:
    stream = io.StringIO()
    progress = ProgressLine("import", stream)
    for done in (0, 5, 6, 500, 1000):
        progress(done, 1000)
    text = stream.getvalue()
    assert text.count("\r") == 3  # 0, 5 and 6 rows are all 0 %
    assert "import: 500/1,000 (50%)" in text and "import: 1,000/1,000 (100%)" in text
    assert text.endswith(" rows/s\n")


def test_bench_option() -> None:
    assert build_parser().parse_args(["bench"]).import_customers == 1_000_000
    assert build_parser().parse_args(["bench", "--import-customers", "0"]).import_customers == 0
