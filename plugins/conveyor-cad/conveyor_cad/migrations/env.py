"""Alembic environment of the CAD plugin's ``cad`` history: ``conveyor db upgrade`` runs it."""

from alembic import context

from conveyor.plugin_api import run_migrations

run_migrations(context.config.attributes["history"], context.config.attributes["connection"])
