from __future__ import annotations

from ..registry import Registry

METHODS: Registry = Registry("training method")
register_method = METHODS.register
