with open("sparse.bin", "wb") as f:
    f.seek((2 << 30) - 1)
    f.write(b"x")
print("ESCAPED: wrote a 2 GiB file")
raise SystemExit(42)
