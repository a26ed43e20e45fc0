"""The C sandbox (csrc/) bound with cffi, and a weaker pure-Python fallback."""
