"""igb_env: an MTL training run as a Gymnasium environment."""
