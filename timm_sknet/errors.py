"""The package's one exception type for anything that stops pretrained weights from loading, and remedies that
name what works where the error is read: Python keywords in Python, flags on the command line."""
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

__all__ = ['WeightsError', 'command_line_context', 'in_command_line', 'remedy']

_COMMAND_LINE: ContextVar[bool] = ContextVar('timm_sknet_command_line', default=False)


class WeightsError(OSError):
    """Pretrained weights could not be provided: none exist, download failed, or integrity check failed.

    A subclass of ``OSError`` because that is what file and network failures already raise, so existing
    ``except OSError`` handlers keep working. The message always says what failed and what to do.
    """


@contextmanager
def command_line_context() -> Iterator[None]:
    """Inside this block, :func:`remedy` gives the command line's words (the ``timm-sknet`` command runs every
    subcommand in it)."""
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def in_command_line() -> bool:
    return _COMMAND_LINE.get()


def remedy(python: str, command_line: str) -> str:
    """The fix in the words of the caller's context: ``python`` (keywords) or ``command_line`` (flags)."""
    return command_line if _COMMAND_LINE.get() else python
