"""Image analysis: arrays and geometry in, results out, no I/O."""
