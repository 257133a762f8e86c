"""``python -m natlint``: the same as the ``natlint`` command."""

from natlint.cli import main

main()
