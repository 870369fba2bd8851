"""``modrpc up`` refuses flags that cannot go together, in one line, before it starts anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_reload_with_embedded_is_refused_naming_both(tmp_path: Path) -> None:
    modrpc = Path(sys.executable).parent / "modrpc"
    done = subprocess.run(
        [str(modrpc), "up", "--embedded", "--reload", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(modrpc.parent), "HOME": str(tmp_path), "MODRPC_ADMIN_PORT": "0",
             "MODRPC_STORE_URL": f"sqlite:///{tmp_path}/store.db"},
    )
    assert done.returncode == 2, done.stderr
    assert "--reload" in done.stderr and "--embedded" in done.stderr
    assert "Traceback" not in done.stderr
