"""The project's top-level packages, named once for the tests that walk or compile all of them."""

from __future__ import annotations

PACKAGES = ("mtl_backends", "igb_env", "agents")
