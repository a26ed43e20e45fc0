"""Alembic environment of the ``control`` history: ``conveyor.migrate.upgrade`` runs the same code."""

from alembic import context

from conveyor.migrate import run_migrations

run_migrations(context.config.attributes["history"], context.config.attributes["connection"])
