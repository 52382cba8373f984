"""The one exception type users see from qcompile."""


class QCompileError(Exception):
    """A model, option or input that qcompile cannot take, with the reason and the fix."""
