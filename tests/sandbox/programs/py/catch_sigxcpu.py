import signal

signal.signal(signal.SIGXCPU, lambda *a: None)
while True:
    pass
