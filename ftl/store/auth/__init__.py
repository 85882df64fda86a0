"""Tokens: FTL's own signed tokens (the only python-jose user) and Google's ID-token keys."""
