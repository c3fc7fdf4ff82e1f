"""A longer fuzzing run of the FastAGI and AMI parsers than the test suite's bounded one.

Runs the properties of tests/test_fuzz_parsers.py with many more examples each:

    .venv/bin/python bench/fuzz.py [--examples 20000]

It passes when no parser raises anything but the project's declared errors (HeaderError,
ProtocolError, FramingError) and a hostile caller name never changes the arguments.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=20_000, help="examples per property")
    args = parser.parse_args()
    env = {**os.environ, "TRUSTLINE_FUZZ_EXAMPLES": str(args.examples)}
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "0",
            "tests/test_fuzz_parsers.py",
        ],
        cwd=ROOT,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - started
    verdict = "no unexpected exception" if result.returncode == 0 else "FAILED (see above)"
    print(f"fuzz: {args.examples} examples per property in {seconds:.0f} s: {verdict}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
