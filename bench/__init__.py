"""Benchmark programs (`python -m bench.NAME`); each prints one JSON object of figures.

They start local stores and processes and sign synthetic users in through the development
sign-in, so they ask for development unless told otherwise: an unset ENV is production
(SPEC §3, docs/decisions/0110).
"""

import os

os.environ.setdefault("ENV", "development")
