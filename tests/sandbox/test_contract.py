"""Both backends pass the backend-neutral sandbox contract."""

from __future__ import annotations

import pytest

from conveyor_sandbox.contract import Sandbox
from conveyor_sandbox.fallback import PythonSandbox
from conveyor_sandbox.native import CSandbox
from conveyor_sandbox.testing import SandboxContract


class TestCSandboxContract(SandboxContract):
    @pytest.fixture
    def sandbox(self, c_sandbox: CSandbox) -> Sandbox:
        return c_sandbox


class TestCSandboxWithoutCgroupsContract(SandboxContract):
    """The degraded C sandbox (no cgroups: rlimits + pid namespace) still keeps the contract."""

    @pytest.fixture
    def sandbox(self) -> Sandbox:
        return CSandbox(use_cgroups=False)


class TestPythonFallbackContract(SandboxContract):
    @pytest.fixture
    def sandbox(self, py_sandbox: PythonSandbox) -> Sandbox:
        return py_sandbox
