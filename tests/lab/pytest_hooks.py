"""The pytest hooks that tests/e2e/conftest.py and tests/deploy/deploylab.py share: a failing
test's report carries the tails of the lab's logs, and the run ends by naming the lab directory.
Each suite makes its pair with `lab_hooks` and binds them to the hook names in its conftest."""
import pytest

import hms


def lab_hooks(lab_dir, extra_logs, label, n, quiet=()):
    """The hooks `pytest_runtest_makereport` and `pytest_terminal_summary` for a suite whose
    lab directory `lab_dir()` returns (None until the session made it). A failing test's report
    gets the last N lines of every *.log in the lab and of each of EXTRA_LOGS (paths relative to
    the lab) that exists, unless its node id contains one of QUIET; the summary names the lab
    as "LABEL: <dir>"."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):
        """A failing test's report carries the tails of the lab's logs."""
        outcome = yield
        rep = outcome.get_result()
        d = lab_dir()
        if rep.failed and d is not None and not any(q in item.nodeid for q in quiet):
            logs = sorted(d.glob("*.log")) + [d / p for p in extra_logs]
            for log in logs:
                if log.exists():
                    rep.sections.append((f"lab log {log.relative_to(d)}", hms.tail(log, n=n)))

    def pytest_terminal_summary(terminalreporter):
        d = lab_dir()
        if d is not None:
            terminalreporter.write_line(f"{label}: {d}")

    return pytest_runtest_makereport, pytest_terminal_summary
