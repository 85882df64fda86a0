"""Sportmonks football API v3: the client, the strict payload parser, its request budget and the
circuit breaker.
"""
