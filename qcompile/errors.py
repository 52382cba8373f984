"""The one exception type users see from qcompile."""


class QCompileError(Exception):
    """A model, option or input that qcompile cannot take, with the reason and the fix."""


class EngineLimitError(QCompileError):
    """The contract's reference engine itself cannot compute this model (it refuses it, or its
    result there is undefined behaviour), so there is nothing to be exact with."""


class TuningInterrupted(QCompileError):
    """`qcompile tune` stopped by Ctrl-C: what was measured is on disk, a rerun continues."""

    exit_code = 130  # a shell's code for a run stopped by SIGINT
