"""Operating the game: the flusher, recovery after a Redis loss, the audit, readiness, the demo
seed, synthetic traders, and the local stand-ins for Sportmonks and Google used in development.
"""
