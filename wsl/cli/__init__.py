"""The ``wsl`` command, its LightningCLI entry, the demo, plots and INR renderings."""
from .main import main

__all__ = ["main"]
