"""Dramatiq actors (background work) and the clock; each actor a few lines calling ftl.

Every process that imports this package (the Dramatiq workers, the clock) declares the broker
from the settings at import, so the settings are checked here first: an environment that cannot
run them (production without its secrets, decision 0110) stops the process with one line that
names what is missing, before any traceback could.
"""

from ftl.core.config import ConfigError, get_settings

try:
    get_settings()
except ConfigError as exc:
    raise SystemExit(str(exc)) from None
