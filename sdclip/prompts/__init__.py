"""Prompt text to tokens and weights, with no torch: syntaxes, chunking, token listings, prompt lists."""
