"""Device boundaries: the T265 pose source, and the Go1 through the Unitree SDK (with its wire format)."""
