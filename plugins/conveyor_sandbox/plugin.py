"""Entry point of the sandbox plugin."""
