"""RedisQueue passes the shared queue contract against the real Redis."""

import pytest

from conveyor.testing.queue import QueueContract


class TestRedisQueue(QueueContract):
    @pytest.fixture
    def queue(self, rqueue):
        return rqueue
