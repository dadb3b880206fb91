"""Property prediction: the LightningModule, tree baselines, and ``wsl predict`` on checkpoints."""
