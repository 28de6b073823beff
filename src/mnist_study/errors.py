class UserError(RuntimeError):
    """A problem the user can fix: the message is one line that says what is wrong and how to fix it."""
