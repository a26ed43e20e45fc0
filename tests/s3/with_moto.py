"""Run a command against a fresh moto S3 server: ``python tests/s3/with_moto.py pytest tests …``.

Starts the server on a free loopback port, creates the bucket ``conveyor-test``, exports
``CONVEYOR_TEST_STORAGE_URL=s3://conveyor-test/suite`` and the standard AWS variables,
runs the command, stops the server and exits with the command's status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from moto_support import MotoServer

BUCKET = "conveyor-test"


def main(argv: list[str]) -> int:
    """Start moto, run ARGV with its environment, stop moto."""
    if not argv:
        print("usage: python tests/s3/with_moto.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    server = MotoServer()
    server.start()
    try:
        server.create_bucket(BUCKET)
        env = {**os.environ, **server.env(), "CONVEYOR_TEST_STORAGE_URL": f"s3://{BUCKET}/suite"}
        return subprocess.call(argv, env=env)
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
