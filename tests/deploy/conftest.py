"""pytest wiring of tests/deploy: the fixtures and hooks live in deploylab.py (see its
docstring)."""
from deploylab import (monitoring, pytest_runtest_makereport,  # noqa: F401
                       pytest_terminal_summary, rendered)
