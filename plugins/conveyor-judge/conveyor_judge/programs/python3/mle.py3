blocks = [bytearray(16 << 20) for _ in range(64)]
print(len(blocks))
