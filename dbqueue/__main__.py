"""``python -m dbqueue`` runs the CLI."""

from dbqueue.cli import main

main()
