"""Where the captured Asterisk traffic lives: ``tests/fixtures/asterisk-captures`` in this repo.

The bytes were recorded from a real PBX (see the README there). A clone of this repository
alone must pass its tests, so nothing reads a folder outside it. A missing fixture fails at
once with the path it expected, never later and never by hanging.
"""

from __future__ import annotations

from pathlib import Path

CAPTURES = Path(__file__).resolve().parent / "fixtures" / "asterisk-captures"
MIXMONITOR_WAV = CAPTURES / "mixmonitor-answered-call.wav"


def capture_path(name: str) -> Path:
    path = CAPTURES / name
    if not path.is_file():
        raise FileNotFoundError(
            f"capture fixture missing: {path} (tests/fixtures is part of the repo)"
        )
    return path
