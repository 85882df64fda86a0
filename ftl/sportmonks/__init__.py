"""Sportmonks football API v3: client, strict payload parser, scoring, breaker, simulator."""
