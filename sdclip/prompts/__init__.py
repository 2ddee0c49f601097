"""Prompt text to tokens and weights, with no torch.

``parsed`` (the typed form: Run, Break; where blends go), ``syntaxes`` (the one table of syntaxes),
``plain`` / ``a1111`` / ``comfy`` (one module per syntax), ``parser`` (``parse`` and the public
``parse_prompt``), ``chunking`` (77-token windows), ``tokens`` (token listings), ``lists`` (prompt
arguments, checked), ``truncation`` (the one truncation warning).
"""
