for target in ("/etc/conveyor-escape", "/var/tmp/conveyor-escape", "/root/conveyor-escape", "/conveyor-escape"):
    try:
        open(target, "w").write("x")
    except OSError:
        continue
    print("ESCAPED:", target)
    raise SystemExit(42)
print("BLOCKED")
