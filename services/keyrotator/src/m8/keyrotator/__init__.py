"""The key rotator (`m8 keyrotator`): issues signed one-time upload keys, destroys them when
their upload ends or they expire, and rotates its signing key (DESIGN section 2)."""

from m8.keyrotator.bootstrap import RotatorKeys, run, start
from m8.keyrotator.settings import KeyRotatorSettings

__all__ = ["KeyRotatorSettings", "RotatorKeys", "run", "start"]
