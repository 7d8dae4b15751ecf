"""Models layer: loading TransformerBridges, fingerprints, hook points, forward helpers,
per-token scoring, greedy generation, tokens for display, block replay and the canaries
that check each fast path against its exact one."""
