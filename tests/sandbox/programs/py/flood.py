import os
import sys

fd = int(sys.argv[1]) if len(sys.argv) > 1 else 1
chunk = b"x" * 65536
for _ in range(1600):
    os.write(fd, chunk)
