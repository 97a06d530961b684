"""The one exception of the Caffe converter."""

__all__ = ['CaffeError']


class CaffeError(ValueError):
    """A prototxt or caffemodel that cannot be converted; the message names the file, the layer and what to do.

    A ``ValueError``: the input is wrong, not the machine. The converter raises it before it writes anything,
    so a failed conversion never leaves an output folder behind.
    """
