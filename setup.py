"""Build hook: the wheel carries dialplan/ and asterisk-conf/ as package data (agent/share/).

The folders stay at the top of the repository, where PBX admins look for them; the build
copies them into the package so `trustline print-dialplan` and `print-manager-conf` work on a
host installed from a wheel. Everything else is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHARED = ("dialplan", "asterisk-conf")


class BuildPyWithShare(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for name in SHARED:
            shutil.copytree(
                root / name, Path(self.build_lib, "agent", "share", name), dirs_exist_ok=True
            )


setup(cmdclass={"build_py": BuildPyWithShare})
