import socket

try:
    s = socket.create_connection(("127.0.0.1", 5432), timeout=1)
except OSError as exc:
    print("BLOCKED:", exc)
else:
    print("ESCAPED: connected")
    raise SystemExit(42)
