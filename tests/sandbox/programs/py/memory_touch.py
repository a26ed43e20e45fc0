blocks = []
for _ in range(1024):
    blocks.append(bytearray(1 << 20))
print("ESCAPED: 1 GiB")
