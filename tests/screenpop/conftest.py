"""The API fuzzing's case counts in the pytest summary (tests/screenpop/test_api_fuzz.py notes
them as a user property), so a CI log states how many generated requests each operation got."""

from __future__ import annotations

import pytest

API_FUZZ = "api fuzz cases"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", []):
                if key != API_FUZZ or getattr(report, "when", None) != "call":
                    continue
                per_operation, total = value
                terminalreporter.write_sep("=", f"{API_FUZZ}: {total} in all")
                for operation, cases in per_operation.items():
                    terminalreporter.write_line(f"{operation}: {cases}")
