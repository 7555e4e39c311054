"""The one exception type a user sees: a message that names the file, the row and the rule."""


class PapersimError(Exception):
    """A problem with the user's input or configuration, reported without a traceback."""
