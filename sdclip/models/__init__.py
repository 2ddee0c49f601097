"""Where weights come from and how they load: sources, checkpoints, loaders, model families, the tokenizer.

Modules are imported on use (``sdclip.models.loading``, ``sdclip.models.tokenizer``, ...), so reading
the shipped tokenizer needs no torch model code.
"""
