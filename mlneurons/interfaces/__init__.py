"""Interfaces layer: the command line, the one-command report and the plots."""
