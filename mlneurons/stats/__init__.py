"""Statistics layer: one streaming collector over named hook points and labels, and the
views the methods read (per-language activation statistics, means, per-item vectors)."""
