from __future__ import annotations

from ..registry import Registry

MODELS: Registry = Registry("architecture")
register_model = MODELS.register
