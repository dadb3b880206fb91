"""The ``wsl`` command, its LightningCLI entry, the demo, plots and INR renderings."""
from .main import main, resolve_config

__all__ = ["main", "resolve_config"]
