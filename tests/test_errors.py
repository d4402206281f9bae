"""Structured errors: settings named by reference, phrased by each front end (pipeline/base/errors.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pipeline.base.errors import (
    NotFoundError,
    UsageError,
    cli_spelling,
    phrase,
    setting,
    settings_named,
)
from pipeline.format.compress import Compression


def test_a_setting_is_spelled_by_whoever_shows_the_message() -> None:
    e = UsageError(f"nothing matched; {setting('force')} backs up the rest, or {setting('store', 'snapshot')}")
    assert str(e) == "nothing matched; --force backs up the rest, or --store snapshot"
    assert e.phrased(lambda n, v: f"${n.upper()}" + (f"={v}" if v else "")) == (
        "nothing matched; $FORCE backs up the rest, or $STORE=snapshot"
    )
    assert settings_named(e.template) == ["force", "store"]
    assert phrase("no reference here", cli_spelling) == "no reference here"


def test_to_json_carries_kind_subject_and_settings() -> None:
    e = NotFoundError(f"no backup of ORDERS; give {setting('backup')} ID", subject="ORDERS")
    assert e.to_json() == {
        "kind": "not_found",
        "exit_code": 3,
        "message": "no backup of ORDERS; give --backup ID",
        "subject": "ORDERS",
        "settings": ["backup"],
    }
    assert "subject" not in UsageError("plain").to_json()


def test_a_library_message_names_its_setting_by_reference() -> None:
    try:
        Compression.parse("zstd:99")
    except UsageError as e:
        assert "compression" in settings_named(e.template)
        assert "--compression 'zstd:99'" in str(e)
    else:  # pragma: no cover - the assertion above is the test
        raise AssertionError("zstd:99 was accepted")


def test_the_cli_json_error_names_the_settings(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.entry.cli",
            "stream",
            "backup",
            "S",
            str(tmp_path / "a"),
            "--no-encrypt",
            "--compression",
            "zstd:99",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    err = json.loads(out.stdout)["error"]
    assert err["kind"] == "usage" and err["settings"] == ["compression"]
    assert "--compression 'zstd:99'" in err["message"]
    assert "\x1f" not in out.stdout + out.stderr
