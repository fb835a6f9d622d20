"""``python -m transferkit`` (also what ``accelerate launch -m transferkit`` runs)."""

from transferkit.cli import main

main()
