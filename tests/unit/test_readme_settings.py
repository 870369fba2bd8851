"""The README lists every setting (key and environment variable): a new one must be documented."""

from __future__ import annotations

from pathlib import Path

from runtime.config import settings_table
from runtime.config._load import env_name, setting_keys

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_with_its_environment_variable() -> None:
    missing = [
        ".".join(key) for key in setting_keys()
        if f"`{'.'.join(key)}`" not in README or f"`{env_name(key)}`" not in README
    ]  # fmt: skip
    assert missing == []


def test_the_readme_table_is_the_generated_one() -> None:
    """Regenerate it with ``modrpc config --markdown`` when a setting or its text changes."""
    assert settings_table() in README
