import threading
import time

total = []
def work(i):
    time.sleep(0.001)
    total.append(sum(range(10000)) + i)
ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("sum", len(total))
