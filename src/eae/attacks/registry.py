from __future__ import annotations

from ..registry import Registry

ATTACKS: Registry = Registry("attack")
register_attack = ATTACKS.register
