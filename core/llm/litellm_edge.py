"""litellm at arm's length: the one module that imports it.

``litellm_module()`` imports litellm on first use, because its import costs seconds and modules that only
need the ``LLM`` protocol should not pay for it. Just before, it switches litellm to the model cost map
bundled in the wheel and to offline mode, so litellm never fetches anything: those switches are environment
variables litellm reads at import, set only where the user has not set them, and only when litellm is first
needed, so importing core leaves the environment alone.

Not here: chat calls and retries (``core.llm.client``), pricing a token count (``core.llm.ledger.cost_of``).
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

# The environment variables litellm reads at import, and the values that keep it offline.
OFFLINE_SWITCHES = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_OFFLINE_MODE": "true"}


@functools.cache
def litellm_module() -> ModuleType:
    """The litellm module, imported offline and quiet on the first call."""
    for name, value in OFFLINE_SWITCHES.items():
        os.environ.setdefault(name, value)
    import litellm

    # Stops litellm printing "Provider List: ..." banners to stdout when a capability check meets an
    # unknown model; the exception still carries the information.
    litellm.suppress_debug_info = True
    return litellm
