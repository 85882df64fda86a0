"""`python -m web.ws`: what `ftl ws` runs once the settings are known to be valid."""

from __future__ import annotations

import asyncio

from ftl.core import logs
from ftl.core.config import get_settings
from web.ws.server import run

if __name__ == "__main__":
    settings = get_settings()
    logs.setup(settings.log_level)
    asyncio.run(run(settings))
