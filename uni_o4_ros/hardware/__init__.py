"""Device boundaries: the T265 pose source (and, later, the Unitree SDK backend)."""
