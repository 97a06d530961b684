"""The package's one exception type for anything that stops pretrained weights from loading."""

__all__ = ['WeightsError']


class WeightsError(OSError):
    """Pretrained weights could not be provided: none exist, download failed, or integrity check failed.

    A subclass of ``OSError`` because that is what file and network failures already raise, so existing
    ``except OSError`` handlers keep working. The message always says what failed and what to do.
    """
