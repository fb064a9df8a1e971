"""The pipeline's one error type (its own module so spec and kinds can both raise it without a cycle)."""


class PipelineError(ValueError):
    """A pipeline file is unusable as written or as parameterised; the message names the file."""
