"""``python -m wsl.cli`` runs the ``wsl`` command."""
import sys

from .main import main

sys.exit(main())
