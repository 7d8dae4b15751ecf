"""Models layer: loading TransformerBridges, fingerprints, hook points, forward helpers,
block replay and the canaries that check each fast path against its exact one."""

DEFAULT_MODEL = "gemma-3-270m"
"""The built-in model every command uses by default (Gemma 3 270M, from a registry package)."""
