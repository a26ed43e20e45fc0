try:
    with open("/etc/shadow") as f:
        f.read()
except OSError:
    print("BLOCKED")
else:
    print("ESCAPED")
    raise SystemExit(42)
