"""``python -m semstore.cli``."""

from semstore.cli.app import main

main()
