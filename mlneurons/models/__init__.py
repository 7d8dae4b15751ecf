"""Models layer: loading TransformerBridges, fingerprints, hook points, forward helpers,
block replay and the canaries that check each fast path against its exact one."""
