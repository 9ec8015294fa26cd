"""`python -m autobp` runs the command line."""

from autobp.cli import main

main()
