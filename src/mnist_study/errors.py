class UserError(RuntimeError):
    """A problem the user can fix: the message is one line that says what is wrong and how to fix it."""


def first_line(err: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
