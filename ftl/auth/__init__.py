"""Authentication: FTL tokens, Google ID tokens, email codes."""
