"""PostgreSQL, the source of truth: models, engine and migrations."""
