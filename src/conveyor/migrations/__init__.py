"""Alembic histories of Conveyor's schema: ``jobs`` and ``control`` (run by ``conveyor.migrate``)."""
