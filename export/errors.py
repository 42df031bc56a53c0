"""Export errors: one message a user can act on, shown as a single CLI line."""


class ExportError(Exception):
    """The export cannot proceed (bad model, task, folder or failed accuracy gate)."""


class ToleranceError(ExportError):
    """The exported graph does not reproduce PyTorch within the tolerance."""
