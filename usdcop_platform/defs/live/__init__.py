"""Live inference (L5): the bar sensor, the per-bar job, and the cycle they share with replay."""
