"""The example modules' tests: their data (users, stock) goes to a temporary folder.

The modules open their SQLite files under ``$MODRPC_DATA_DIR`` once per process, so one folder
serves the whole session; tests pick unique emails and read stock before changing it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def module_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    if os.environ.get("MODRPC_DATA_DIR"):
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODRPC_DATA_DIR", str(tmp_path_factory.mktemp("module-data")))
        yield
