"""Evaluation layer: perplexity under interventions and language identification."""
