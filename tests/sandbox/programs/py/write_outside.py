for target in ("/etc/conveyor-escape", "/var/tmp/conveyor-escape", "/root/conveyor-escape", "/conveyor-escape"):
    try:
        with open(target, "w") as f:
            f.write("x")
    except OSError:
        continue
    print("ESCAPED:", target)
    raise SystemExit(42)
print("BLOCKED")
