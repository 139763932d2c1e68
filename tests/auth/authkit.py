"""Helpers for the token tests: unsigned JWTs, a token command that counts its runs."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def make_jwt(exp: float, **claims: object) -> str:
    """A JWT with ``alg: none``, the given ``exp`` and a unique ``jti`` (so no two are equal)."""
    payload: dict[str, object] = {"exp": exp, "jti": uuid.uuid4().hex, **claims}
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def counting_command(tmp_path: Path) -> tuple[str, Path]:
    """A shell command that appends a line to a file per run and prints ``tok-<runs>``."""
    runs = tmp_path / "runs.txt"
    return f'echo run >> "{runs}"; printf "tok-%s\\n" "$(wc -l < "{runs}" | tr -d " ")"', runs


def run_count(runs: Path) -> int:
    return len(runs.read_text().splitlines()) if runs.exists() else 0
