"""An oracle for the diff engine: a corpus of schema evolutions, judged three ways (SPEC §4).

Each evolution is one module of a temporary project, recorded twice with the real ``modrpc gen``
(the "before" models at 2025-01-15, the "after" models at 2025-06-01). Its verdict is then:

- what ``modrpc gen`` recorded (``breaking`` in ``versions/2025-06-01.json``);
- what SPEC §4's table says for that row and position;
- what ``buf breaking --against`` (rules WIRE_JSON) says of the two generated version folders.

modrpc must agree with the table everywhere. buf judges only what the wire and JSON can see:
where it disagrees, the evolution names the row of the table that decides (and the test checks
that row is in the diff engine's table, which restates SPEC §4's). buf sees none of the
``buf.validate`` rules, nullability or requiredness; it accepts a removed field or enum value
whose number and name are reserved, which modrpc's ``.proto`` always does; and WIRE_JSON does
not look at services, so a removed method passes it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import runtime.gtype._diff as diff_engine

BUF = Path(sys.executable).parent / "buf"


@dataclass(frozen=True)
class Evolution:
    """One change: the request (``Req``) or response (``Resp``) model before and after."""

    name: str
    row: str
    """SPEC §4's row, as the diff engine's table spells it."""
    position: str
    """``request``, ``response`` or ``method``."""
    before: str
    after: str
    breaking: bool
    """SPEC §4's verdict for the row in that position."""
    buf_breaking: bool
    """What buf breaking (WIRE_JSON) says."""
    header: str = ""
    """Types both versions share (an enum)."""


COLOR_2 = 'class Color(str, Enum):\n    RED = "red"\n    GREEN = "green"\n'
COLOR_3 = COLOR_2 + '    BLUE = "blue"\n'
PATTERN_1 = 'a: Annotated[str, Field(pattern="^[a-z]+$")]'
PATTERN_2 = 'a: Annotated[str, Field(pattern="^[a-z]{2,}$")]'


def both(name: str, row: str, before: str, after: str, *, request: bool, response: bool,
         buf: bool = False, header: tuple[str, str] = ("", "")) -> list[Evolution]:  # fmt: skip
    """The same change in the request and in the response."""
    return [
        Evolution(f"{name}_req", row, "request", before, after, request, buf, header[0] + "|" + header[1]),
        Evolution(f"{name}_resp", row, "response", before, after, response, buf, header[0] + "|" + header[1]),
    ]


CORPUS: list[Evolution] = [
    *both("optional_added", "optional field added", "a: str", 'a: str\nb: str = ""', request=False, response=False),
    *both("required_added", "required field added", "a: str", "a: str\nb: str", request=True, response=False),
    *both("optional_removed", "field removed (optional or required)", 'a: str\nb: str = ""', "a: str", request=True, response=True),
    *both("required_removed", "field removed (optional or required)", "a: str\nb: str", "a: str", request=True, response=True),
    *both("renamed", "field renamed (a removal plus an addition)", 'a: str\nnote: str = ""', 'a: str\nmemo: str = ""', request=True, response=True),
    *both("became_required", "optional field becomes required", 'a: str\nb: str = ""', "a: str\nb: str", request=True, response=False),
    *both("became_optional", "required field becomes optional", "a: str\nb: str", 'a: str\nb: str = ""', request=False, response=True),
    *both("nullable_removed", "nullable field stops being nullable", "a: str\nb: int | None", "a: str\nb: int", request=True, response=False),
    *both("nullable_added", "field becomes nullable", "a: str\nb: int", "a: str\nb: int | None", request=False, response=True),
    *both("max_tightened", "constraint tightened", "a: Annotated[str, Field(max_length=200)]", "a: Annotated[str, Field(max_length=100)]", request=True, response=False),
    *both("min_raised", "constraint tightened", "a: Annotated[int, Field(ge=0)]", "a: Annotated[int, Field(ge=10)]", request=True, response=False),
    *both("max_loosened", "constraint loosened", "a: Annotated[str, Field(max_length=100)]", "a: Annotated[str, Field(max_length=200)]", request=False, response=True),
    # A pattern change cannot be judged either way, so it counts as tightened and as loosened.
    Evolution("pattern_changed_req", "constraint tightened", "request", PATTERN_1, PATTERN_2, True, False),
    Evolution("pattern_changed_resp", "constraint loosened", "response", PATTERN_1, PATTERN_2, True, False),
    *both("enum_value_added", "enum value added", "a: Color", "a: Color", request=False, response=True, header=(COLOR_2, COLOR_3)),
    *both("enum_value_removed", "enum value removed", "a: Color", "a: Color", request=True, response=False, header=(COLOR_3, COLOR_2)),
    *both("type_changed", "any type change; a reused field or enum number", "a: str", "a: int", request=True, response=True, buf=True),
    # WIRE_JSON judges messages only (RPC_NO_DELETE is in buf's FILE and PACKAGE categories).
    Evolution("method_removed", "method removed", "method", "", "", True, False),
    Evolution("method_added", "method added", "method", "", "", False, False),
    # The request, then the response, becomes a stream of the same message.
    Evolution("streaming_request", "streaming shape changed", "request", "", "", True, True),
    Evolution("streaming_response", "streaming shape changed", "response", "", "", True, True),
]


DECIDED_BY_BUF_TOO = {"type_changed_req", "type_changed_resp", "method_added", "streaming_request", "streaming_response"}
"""Where buf and SPEC agree: a change the wire or JSON can see."""


def _models(evolution: Evolution, after: bool) -> str:
    header = evolution.header.split("|")[1 if after else 0] if evolution.header else ""
    changed = evolution.after if after else evolution.before
    fixed = {"request": "id: str", "response": "ok: bool"}
    req = changed if evolution.position == "request" else fixed["request"]
    resp = changed if evolution.position == "response" else fixed["response"]
    if evolution.position == "method" or evolution.name.startswith("streaming_"):
        req, resp = fixed["request"], fixed["response"]
    indent = "    "
    return (
        "from enum import Enum\nfrom typing import Annotated\n\nfrom pydantic import BaseModel, Field\n\n"
        f"{header}\n\nclass Req(BaseModel):\n{textwrap.indent(req, indent)}\n\n\n"
        f"class Resp(BaseModel):\n{textwrap.indent(resp, indent)}\n"
    )


def _handlers(module: str, evolution: Evolution, after: bool) -> str:
    methods = ["call"]
    if evolution.name == "method_removed" and not after:
        methods.append("drop")
    if evolution.name == "method_added" and after:
        methods.append("extra")
    out = [
        "from collections.abc import AsyncIterator\n\n"
        f"from modules.{module}.models import Req, Resp\nfrom runtime import GlobalContext, LocalContext, handler\n"
    ]
    request, response, body = "Req", "Resp", "raise NotImplementedError"
    if after and evolution.name == "streaming_request":
        request = "AsyncIterator[Req]"
    if after and evolution.name == "streaming_response":
        response, body = "AsyncIterator[Resp]", "raise NotImplementedError\n    yield Resp()"
    for m in methods:
        out.append(
            f"\n\n@handler\nasync def {m}(req: {request}, lctx: LocalContext, gctx: GlobalContext) -> {response}:\n"
            f'    """{m}."""\n    {body}\n'
        )
    return "".join(out)


def _write(root: Path, after: bool) -> None:
    for i, evolution in enumerate(CORPUS):
        module = f"corpus{i:02d}"
        folder = root / "modules" / module
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
        (folder / "module.toml").write_text(f'[module]\nname = "{module}"\nversion = "1.0.0"\n')
        (folder / "models.py").write_text(_models(evolution, after))
        (folder / "handlers.py").write_text(_handlers(module, evolution, after))


def _gen(root: Path, date: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "gen", "--root", str(root), "--date", date],
        cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "modrpc.toml").write_text("# a modrpc project: the evolution corpus\n")
    (root / "modules").mkdir()
    (root / "modules" / "__init__.py").write_text("")
    _write(root, after=False)
    _gen(root, "2025-01-15")
    for path in (root / "modules").rglob("__pycache__"):
        for f in path.iterdir():
            f.unlink()
    _write(root, after=True)
    _gen(root, "2025-06-01")
    return root


def table_rows() -> list[str]:
    """The rows of the diff engine's table (SPEC §4's, restated in runtime/gtype/_diff.py)."""
    doc = diff_engine.__doc__ or ""
    return [
        line.split("  ")[0].strip()
        for line in doc.splitlines()
        if line.rstrip().endswith("breaking") and not line.startswith("change")
    ]


def test_the_corpus_covers_every_row_of_the_table_in_both_positions() -> None:
    covered = {(e.row, e.position) for e in CORPUS}
    assert len(CORPUS) >= 24
    for row in table_rows():
        wanted = ["method"] if row.startswith("method") else ["request", "response"]
        for position in wanted:
            assert (row, position) in covered, (row, position)


@pytest.mark.parametrize("evolution", CORPUS, ids=[e.name for e in CORPUS])
def test_modrpc_follows_the_table_and_buf_differs_only_where_the_table_decides(
    project: Path, evolution: Evolution
) -> None:
    module = f"corpus{CORPUS.index(evolution):02d}"
    record = json.loads((project / "modules" / module / "versions" / "2025-06-01.json").read_text())
    assert record["breaking"] is evolution.breaking, record["changes"]

    proto = project / "proto"
    done = subprocess.run(
        [str(BUF), "breaking", str(proto / module / "2025-06-01"), "--against",
         str(proto / module / "2025-01-15"), "--config", str(proto / "buf.yaml")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 100), done.stderr
    buf_breaking = done.returncode == 100
    assert buf_breaking is evolution.buf_breaking, done.stdout + done.stderr
    if buf_breaking != evolution.breaking:
        # buf cannot see this change; SPEC §4's row for it decides, and that row is the engine's.
        assert evolution.name not in DECIDED_BY_BUF_TOO
        table = diff_engine.__doc__ or ""
        assert any(line.startswith(evolution.row) for line in table.splitlines()), evolution.row
    else:
        assert evolution.breaking == buf_breaking
