"""The store: SQLAlchemy 2 models, sessions and Alembic migrations. The single source of
truth for what exists and what state each run is in."""
