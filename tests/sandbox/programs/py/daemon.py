import os
import time

if os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(1000)
print("parent leaving")
