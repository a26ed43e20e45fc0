"""`python -m conveyor`."""

from conveyor.cli import main

main()
