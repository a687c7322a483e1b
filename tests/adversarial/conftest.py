"""Counts the cases the adversarial suite draws (printed at the end of the run)."""

DRAWN = {"cases": 0}


def pytest_terminal_summary(terminalreporter):
    if DRAWN["cases"]:
        terminalreporter.write_line(f"adversarial suite: {DRAWN['cases']} cases drawn")
