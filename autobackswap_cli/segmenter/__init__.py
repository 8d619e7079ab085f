"""The secondary network: backbone registry + per-patch head (model), training (train), inference (predict)."""
