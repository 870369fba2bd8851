"""Unfilled transformer stubs are found by function, and refused before a worker serves them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from runtime.codegen._transformers import render_transformer_stub
from runtime.errors import FailedPrecondition
from runtime.versions import VersionCatalog, VersionHistory, unfilled_transformers
from runtime.versions._stubs import unfilled_stubs

REPO = Path(__file__).resolve().parents[2]


def test_a_generated_stub_is_unfilled_in_every_function() -> None:
    history = VersionHistory.load("users", REPO / "modules/users/versions")
    old, new = history.records
    source = render_transformer_stub("users", old, new)
    assert unfilled_stubs(source) == [
        "forward_create_user_request", "backward_create_user_response", "backward_get_user_response"
    ]


@pytest.mark.parametrize(
    ("body", "unfilled"),
    [
        ('    """Docs."""\n    raise NotImplementedError("later")\n', True),
        ("    raise NotImplementedError\n", True),
        ("    pass\n", True),
        ("    ...\n", True),
        ('    """Only a docstring."""\n', True),
        ("    return dict(request)\n", False),
        ('    """Docs."""\n    if not request:\n        raise NotImplementedError\n    return request\n', False),
    ],
)
def test_a_transformer_is_unfilled_when_its_body_is_only_a_placeholder(body: str, unfilled: bool) -> None:
    source = f"def forward_put_request(request):\n{body}\n\ndef helper(x):\n    raise NotImplementedError\n"
    assert unfilled_stubs(source) == (["forward_put_request"] if unfilled else [])


def test_the_example_project_has_no_unfilled_stub() -> None:
    for module in sorted((REPO / "modules").iterdir()):
        if (module / "module.toml").exists():
            assert unfilled_transformers(module, root=REPO) == []


def test_a_worker_refuses_to_load_a_catalog_with_a_stub_naming_the_file(tmp_path: Path) -> None:
    module = tmp_path / "users"
    shutil.copytree(REPO / "modules/users/versions", module / "versions")
    shutil.copy(REPO / "modules/users/fields.lock.json", module / "fields.lock.json")
    history = VersionHistory.load("users", module / "versions")
    stub = module / "transformers" / "v2025_06_01.py"
    stub.parent.mkdir()
    stub.write_text(render_transformer_stub("users", *history.records))

    with pytest.raises(FailedPrecondition, match=r"v2025_06_01\.py: forward_create_user_request, .* still the generated stub"):
        VersionCatalog.from_module_dir("users", module, {})

    shutil.copy(REPO / "modules/users/transformers/v2025_06_01.py", stub)
    assert VersionCatalog.from_module_dir("users", module, {}).latest.id == "2025-06-01"
    assert json.loads((module / "versions/2025-06-01.json").read_text())["breaking"] is True
