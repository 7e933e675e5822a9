"""`.env.example` and docs/configuration.md document every setting and are current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from slipway.platform.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_generated_settings_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_settings_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_setting_is_in_env_example() -> None:
    documented = set(
        re.findall(r"^# ([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.MULTILINE)
    )
    expected = {name.upper() for name in Settings.model_fields}
    assert expected - documented == set()
    assert documented - expected == set()
