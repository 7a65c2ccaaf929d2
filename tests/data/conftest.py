"""Hermetic search roots for the data tests."""

import pytest


@pytest.fixture(autouse=True)
def _hermetic_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep ~/.cache/adaptopt of the machine out of the search."""
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
