"""The reports read run directories only: importing them loads no training stack, not even torch."""

from __future__ import annotations

import json
import subprocess
import sys

TRAINING_STACK = (
    "torch",
    "adaptopt.optim",
    "adaptopt.tasks",
    "adaptopt.models",
    "adaptopt.data",
    "adaptopt.experiments.trainer",
    "adaptopt.experiments.sweep",
    "adaptopt.experiments.callbacks",
)


def _loaded_after(statement: str) -> list[str]:
    code = (
        f"import json, sys; {statement}; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"('torch', 'adaptopt'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _stack(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(TRAINING_STACK)]


def test_importing_the_reports_loads_no_training_stack():
    loaded = _loaded_after(
        "import adaptopt.experiments.report, adaptopt.experiments.study_report, "
        "adaptopt.experiments.selection, adaptopt.experiments.study"
    )
    assert "adaptopt.experiments.study_report" in loaded
    assert _stack(loaded) == []


def test_the_check_sees_the_training_stack_when_it_is_imported():  # negative control
    loaded = _loaded_after("import adaptopt.experiments.sweep")
    assert {"torch", "adaptopt.experiments.trainer", "adaptopt.optim"} <= set(_stack(loaded))
