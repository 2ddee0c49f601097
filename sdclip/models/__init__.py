"""Where weights come from and how they load.

- ``sources``: one resolver for hub ids, CLIP folders, pipeline folders, single files and the models that ship
  in the package (``sdclip:shapes``, whose files are in ``_demo/shapes/``), and the hub probe;
- ``checkpoint``: reading weights (key layouts, lazy safetensors, the pickle policy, ``check_finite``);
- ``families``: SD 1.x, SD 2.x, SDXL, SD3 / SD3.5 and Flux.1 as data;
- ``options``: ``LoadOptions``, the one set of load options; ``devices``: device and dtype names;
- ``building``: config + state dict -> a checked transformers model;
- ``text_encoders`` (text encoders and tokenizers for a source), ``clip_models`` (full CLIPModel for
  scoring); ``loading`` re-exports both;
- ``tokenizer``: the shipped tokenizer.

Modules are imported on use, so reading the shipped tokenizer needs no torch model code.
"""
