"""The exceptions sdclip raises for bad input: one hierarchy, one line each.

Every message names the argument or file at fault, says what was expected and what was found, and
where it can, the fix. The CLI prints ``str(error)`` on one line and exits with code 2.
"""


class SdclipError(Exception):
    """Base class of every error sdclip raises on purpose.

    Example:
        >>> try:
        ...     raise ModelSourceError("model 'x': not found")
        ... except SdclipError as error:
        ...     print(error)
        model 'x': not found
    """


class ModelSourceError(SdclipError, ValueError):
    """A model source (hub id, folder or file) is missing, unreadable or not what was expected."""


class WeightsNotAvailableError(ModelSourceError):
    """Weights would have to be downloaded, but the hub is offline or unreachable."""


class PickleRefusedError(ModelSourceError):
    """A pickle checkpoint (.ckpt/.pt/.bin) was given without ``allow_pickle=True``."""


class PromptError(SdclipError, ValueError):
    """Prompts of the wrong type, or prompt and negative-prompt lists of different lengths."""


class ImageInputError(SdclipError, ValueError):
    """An image input that cannot be read or converted."""


class EmbeddingError(SdclipError, ValueError):
    """A textual-inversion embedding that does not fit the model."""


class PromptTypeError(SdclipError, TypeError):
    """A prompt item that is not a string."""


class ScoreFileError(SdclipError, ValueError):
    """A score file that is missing, of an unknown format, or lacks the columns a scorer writes."""


class ScorerError(SdclipError, ValueError):
    """A scorer option out of range, or a scorer name that is not registered."""


class TrainingError(SdclipError, ValueError):
    """A training option out of range, or a model or output folder training cannot use."""


class TrainingDataError(TrainingError):
    """Training data that cannot be read: a missing file, an unknown format, a missing column, no pairs."""
