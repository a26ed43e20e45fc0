try:
    open("/etc/shadow").read()
except OSError:
    print("BLOCKED")
else:
    print("ESCAPED")
    raise SystemExit(42)
