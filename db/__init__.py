"""The store: SQLAlchemy 2 models, sessions, Alembic migrations, and the settings that say where
the database and the data folder are. The single source of truth for what exists and what state
each run is in. It imports core only (its errors); never worker or app."""
