import os
import signal

try:
    os.kill(os.getppid(), signal.SIGKILL)
except OSError:
    print("BLOCKED")
else:
    print("ESCAPED")
    raise SystemExit(42)
