"""Data layer: corpora (language -> token rows), fact sets (facts aligned by uuid across
languages, with templates and candidates) and the built-in text and facts."""
