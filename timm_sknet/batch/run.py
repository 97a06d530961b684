"""A bulk run: every image not yet written, through the predictor and into the output, with progress and a summary."""
import sys
import time
from collections import Counter
from pathlib import Path
from typing import List, Sequence, Tuple, Union

from ..progress import progress
from .output import PredictionFiles, Printer, path_key
from .predictor import BatchPredictor, image_batches

__all__ = ['run_bulk']


def _remaining(paths: Sequence[Path], done: Counter[int]) -> List[Path]:
    """``paths`` less one occurrence per ``done`` entry (:func:`path_key` counts, used up: so duplicates are kept
    as often as they are listed)."""
    todo = []
    for path in paths:
        key = path_key(str(path))
        if done[key]:
            done[key] -= 1
        else:
            todo.append(path)
    return todo


def run_bulk(predictor: BatchPredictor, paths: Sequence[Path], sink: Union[PredictionFiles, Printer],
             batch_size: int = 8, workers: int = 0) -> Tuple[int, int]:
    """Predict every path ``sink`` has not done yet; failures reported on stderr as they come.

    Returns:
        (rows, failures) of the whole job, earlier runs of a resumed one included.
    """
    todo = _remaining(paths, sink.done)
    if len(todo) < len(paths):
        print(f'timm-sknet: resuming: {len(paths) - len(todo)} of {len(paths)} images done already', file=sys.stderr)
    start = time.perf_counter()
    batches = image_batches(todo, predictor.transform, batch_size, workers, predictor.decode_size,
                            pin_memory=predictor.device.type == 'cuda')
    for batch in progress(batches, total=len(todo), desc='predict', unit='img',
                          size=lambda b: len(b.indices) + len(b.failures)):
        rows, embeddings = (predictor.predict([todo[i] for i in batch.indices], batch.images)
                            if batch.images is not None else ([], None))
        failures = [(str(todo[i]), reason) for i, reason in batch.failures]
        for _, reason in failures:
            print(f'timm-sknet: skipped: {reason}', file=sys.stderr, flush=True)
        sink.write(rows, embeddings, failures)
    seconds = time.perf_counter() - start
    summary = sink.finish()
    rate = f' ({len(todo) / seconds:.1f} images/s)' if todo and seconds > 0 else ''
    print(f'timm-sknet: {len(todo)} images in {seconds:.1f} s{rate}; {summary}', file=sys.stderr)
    return sink.written, sink.failed
