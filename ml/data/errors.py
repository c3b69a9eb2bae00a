"""The one error of the data stage: what on disk breaks which rule."""


class DatasetError(ValueError):
    """The data on disk breaks a layout rule; the message names the file/folder and the rule."""
