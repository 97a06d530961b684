"""Progress display for long loops: tqdm when it is installed (it comes with huggingface_hub), else plain lines."""
import sys
from typing import Iterable, Iterator, Optional, TypeVar

__all__ = ['progress']

T = TypeVar('T')


def progress(iterable: Iterable[T], total: Optional[int] = None, desc: str = '',
             enabled: Optional[bool] = None) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on stderr.

    ``enabled=None`` shows it only when stderr is a terminal (so logs and pipes stay clean); ``True``
    always shows it, ``False`` never.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield from iterable
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        yield from tqdm(iterable, total=total, desc=desc, file=sys.stderr, leave=False)
        return
    count = 0
    for count, item in enumerate(iterable, 1):
        yield item
        print(f'{desc}: {count}/{total if total is not None else "?"}', file=sys.stderr, flush=True)
