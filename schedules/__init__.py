"""Per-target-family choices: target dicts, default schedules (and, later, intrinsics and rules).

Nothing outside this package spells an `mcpu` or an intrinsic name.
"""

from .targets import TARGETS, resolve_target

__all__ = ["TARGETS", "resolve_target"]
