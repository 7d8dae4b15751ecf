"""Methods layer: LAPE, interventions and steering, factual probing, PROBELESS, knowledge
tracing and LRP2; each a small function of collected statistics or a hook factory."""
