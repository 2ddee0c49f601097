"""Other packages' APIs on sdclip's models: ``openai_clip`` is OpenAI's ``clip`` (``from sdclip import clip``)."""
