"""Build hook: the repository's ``configs/`` and ``policies/`` become package data of the wheel.

All metadata is in ``pyproject.toml``. The repository keeps ``configs/`` and ``policies/`` at its
root (README commands use those paths in a checkout); a wheel carries a copy under
``mtl_backends/_data/``, where ``mtl_backends.packaged`` finds them by name. An editable install
reads them in place, so nothing is copied there.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGED = {
    # folder: the files of it that a wheel carries (nothing else a checkout may hold, e.g. runs)
    "configs": ("*/*.yaml",),
    "policies": ("README.md", "*/policy.json", "*/policy.pt"),
}


class BuildPyWithData(build_py):
    """``build_py`` that also copies ``configs/`` and ``policies/`` to ``mtl_backends/_data/``."""

    def run(self) -> None:
        """Build the packages, then copy the data folders (not for an editable install)."""
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "mtl_backends" / "_data"
        for folder, patterns in PACKAGED.items():
            files = sorted({p for pattern in patterns for p in (ROOT / folder).glob(pattern)})
            if not files:
                raise SystemExit(f"setup.py: no files in {ROOT / folder} to package")
            for src in files:
                dst = target / src.relative_to(ROOT)
                self.mkpath(str(dst.parent))
                self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithData})
