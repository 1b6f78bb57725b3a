from __future__ import annotations

import re

from ..registry import Registry

# a spec is the name, then steps and restarts (pgd50r10): a name has no digits, or they would be read as steps
ATTACKS: Registry = Registry("attack", re.compile(r"[a-z_-]+"), "lowercase letters, '_' and '-' (digits in a spec "
                             "are its steps)")
register_attack = ATTACKS.register
