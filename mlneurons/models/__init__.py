"""Models layer: loading TransformerBridges, fingerprints, hook points, forward helpers,
per-token scoring, greedy generation, tokens for display, block replay and the canaries
that check each fast path against its exact one."""

DEFAULT_MODEL = "gemma-3-270m"
"""The built-in model every command uses by default (Gemma 3 270M, from a registry package);
here, not in loading.py, so that the command line's help reads it without importing torch."""
