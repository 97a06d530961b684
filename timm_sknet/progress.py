"""Progress display for long loops: tqdm when it is installed (it comes with huggingface_hub), else plain lines."""
import sys
from typing import Callable, Iterable, Iterator, Optional, TypeVar

__all__ = ['progress']

T = TypeVar('T')


def progress(iterable: Iterable[T], total: Optional[int] = None, desc: str = '',
             enabled: Optional[bool] = None, unit: str = 'it', size: Optional[Callable[[T], int]] = None) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar on stderr, with the rate in ``unit`` per second.

    ``enabled=None`` shows it only when stderr is a terminal (so logs and pipes stay clean); ``True``
    always shows it, ``False`` never. ``size(item)`` is how many units an item counts for (default 1), so a
    loop over batches can count, and ``total`` be, images.
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
        with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False) as bar:
            for item in iterable:
                yield item
                bar.update(size(item) if size else 1)
        return
    count = 0
    for item in iterable:
        yield item
        count += size(item) if size else 1
        print(f'{desc}: {count}/{total if total is not None else "?"} {unit}', file=sys.stderr, flush=True)
