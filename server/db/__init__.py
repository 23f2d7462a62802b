"""Database: typed models, the engine and its sessions, and Alembic migrations."""
