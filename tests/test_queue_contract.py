"""Every built-in queue backend passes the shared contract."""

import uuid

import pytest

from conveyor.db import init_db
from conveyor.queue.memory import MemoryQueue
from conveyor.queue.sql import SqlQueue
from conveyor.testing.queue import QueueContract


class TestMemoryQueue(QueueContract):
    @pytest.fixture
    def queue(self):
        return MemoryQueue("memory://contract")


class TestSqlQueue(QueueContract):
    @pytest.fixture
    def queue(self, engine):
        init_db(engine)
        return SqlQueue(engine, stream=f"contract:{uuid.uuid4().hex}")
