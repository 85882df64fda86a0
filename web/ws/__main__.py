"""`python -m web.ws`: what `ftl ws` runs once the settings are known to be valid."""

from __future__ import annotations

import asyncio
import logging

from ftl.config import get_settings
from web.ws.server import run

if __name__ == "__main__":
    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(run(settings))
