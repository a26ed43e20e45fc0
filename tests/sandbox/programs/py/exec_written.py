import os
import shutil

shutil.copy("/bin/true", "mytrue")
os.chmod("mytrue", 0o755)
try:
    os.execv("./mytrue", ["./mytrue"])
except OSError:
    print("BLOCKED")
