"""``python -m tiler.cli``."""

from tiler.cli import main

main()
