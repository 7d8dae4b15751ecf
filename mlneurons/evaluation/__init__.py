"""Evaluation layer, metrics only: perplexity (also of many neuron masks in shared passes)
and language identification. Imports nothing from methods or interfaces."""
