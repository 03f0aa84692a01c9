"""What the simulator renders: image formation, the sample library, simulated measurements with their truth."""
