"""Where bulk predictions go, so that a killed run loses nothing and ``--resume`` redoes nothing.

Per batch, in this order: the embeddings are appended to ``EMB.partial`` (raw float32 rows), the rows to the
output (whole lines), the failures to ``OUTPUT.errors.csv``; each append is on disk (fsync) before the next.
A run killed at any point leaves at most one half-written line at the end of a file. ``--resume`` cuts it off
(:func:`timm_sknet.file_io.drop_partial_line`), cuts the embeddings back to the number of output rows, and
predicts only the images that have no row and no error yet (counted, so a path listed twice is predicted
twice). When every image is done, the embeddings are written as ``.npy`` or ``.safetensors`` (atomically) and
the partial file is removed. Row ``i`` of the embeddings is the image of row ``i`` of the output.
"""
import csv
import hashlib
import io
import json
import os
import shutil
import struct
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Dict, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from ..file_io import append_durably, atomic_file, drop_partial_line
from .manifest import manifest_path

__all__ = ['EMBEDDING_FORMATS', 'OUTPUT_FORMATS', 'Embeddings', 'PredictionFiles', 'Printer', 'check_paths',
           'errors_path', 'path_key']

OUTPUT_FORMATS = ('.csv', '.jsonl')
EMBEDDING_FORMATS = ('.npy', '.safetensors')
#: the tensor's name in an embeddings .safetensors file
EMBEDDINGS_KEY = 'embeddings'
_JSON, _JSONL_START = json.JSONDecoder(), '{"path": '


def errors_path(output: Path) -> Path:
    """The failures of a run writing ``output``: ``preds.csv`` -> ``preds.errors.csv`` (path, error)."""
    return output.with_name(f'{output.stem}.errors.csv')


def _partial(embeddings: Path) -> Path:
    return embeddings.with_name(f'{embeddings.name}.partial')


def check_paths(output: Optional[Path], embeddings: Optional[Path], resume: bool) -> None:
    """Refuse, before any work, what cannot be written as asked.

    Raises:
        ValueError: an unknown extension, embeddings or ``resume`` without an output file.
        FileNotFoundError: the folder of the output or the embeddings does not exist.
        FileExistsError: files of an earlier run exist and ``resume`` is off.
    """
    if output is None:
        if embeddings is not None or resume:
            raise ValueError('--embeddings and --resume need --output FILE (.csv or .jsonl): rows and embeddings '
                             'are aligned through it')
        return
    for path, formats, option in ((output, OUTPUT_FORMATS, '--output'), (embeddings, EMBEDDING_FORMATS, '--embeddings')):
        if path is not None and path.suffix.lower() not in formats:
            raise ValueError(f'{option} {path}: the extension says the format; use one of {", ".join(formats)}')
        if path is not None and not path.absolute().parent.is_dir():
            raise FileNotFoundError(f'{option} {path}: the folder {path.parent} does not exist; create it '
                                    f'(mkdir -p {path.parent}) or write elsewhere')
    if resume:
        return
    earlier = [p for p in (output, errors_path(output), manifest_path(output), embeddings,
                           embeddings and _partial(embeddings)) if p and p.exists()]
    if earlier:
        raise FileExistsError(f'{", ".join(map(str, earlier))} exist: pass --resume to continue that run, '
                              'or remove them to start again')


def path_key(path: str) -> int:
    """A path as resume holds it: 8 bytes of its blake2b (about 80 bytes a row in a Counter, against about 1 kB for
    the row as a dict; two of a million paths share a key with a probability of about 3e-8)."""
    return int.from_bytes(hashlib.blake2b(path.encode('utf-8', 'surrogateescape'), digest_size=8).digest(), 'little')


class _Rows:
    """A CSV or JSONL file of rows, appended whole. ``done`` counts the :func:`path_key` of each row already there
    (the partial line dropped), read by streaming the file: no row is held."""

    def __init__(self, path: Path, columns: Sequence[str]):
        self.path, self.columns, self.is_csv = path, list(columns), path.suffix.lower() == '.csv'
        self.done: Counter[int] = Counter()
        if path.exists():
            drop_partial_line(path)
            with open(path, newline='', encoding='utf-8') as f:
                self._count(f)
        self.count = sum(self.done.values())

    def _count(self, f: TextIO) -> None:
        if self.is_csv:
            reader = csv.reader(f)
            self._check(next(reader, None))
            self.done.update(path_key(row[0]) for row in reader)
            return
        for number, line in enumerate(f):
            if not number:
                self._check(list(json.loads(line)))
            # the rows this module writes start with the path: decode only it (a whole row is 10x slower)
            start = line.startswith(_JSONL_START)
            path = _JSON.raw_decode(line, len(_JSONL_START))[0] if start else json.loads(line)['path']
            self.done[path_key(path)] += 1

    def _check(self, columns: Optional[List[str]]) -> None:
        if columns is not None and columns != self.columns:
            raise ValueError(f'{self.path} has the columns {",".join(columns)}, this run writes '
                             f'{",".join(self.columns)}: resume with the options of the first run (--topk, --model)')

    def append(self, rows: Sequence[Dict[str, Any]]) -> None:
        if not rows:
            return
        if self.is_csv:
            text = io.StringIO()
            writer = csv.DictWriter(text, self.columns, lineterminator='\n')
            if not self.path.exists() or not self.path.stat().st_size:
                writer.writeheader()
            writer.writerows(rows)
            data = text.getvalue()
        else:
            data = ''.join(json.dumps(row, ensure_ascii=False) + '\n' for row in rows)
        append_durably(self.path, data.encode('utf-8'))


class Embeddings:
    """pre_logits rows appended to ``PATH.partial`` (raw little-endian float32), written as ``PATH`` at the end.

    ``rows`` is the number of output rows already written: the partial file is cut back to them on resume (a
    batch whose rows were not all written is predicted again), or rebuilt from a finished ``PATH``.
    """

    def __init__(self, path: Path, size: int, rows: int):
        self.path, self.partial, self.size, self.rows = path, _partial(path), size, rows
        row_bytes = 4 * size
        if self.partial.exists():
            have = self.partial.stat().st_size // row_bytes
            if have < rows:
                raise ValueError(f'{self.partial} holds {have} embeddings for {rows} rows: it is not from this run')
            os.truncate(self.partial, rows * row_bytes)
        elif path.exists():
            finished = self._load()
            if finished.shape[1:] != (size,) or len(finished) < rows:
                raise ValueError(f'{path} holds embeddings of shape {finished.shape}, not {rows} rows of {size}')
            append_durably(self.partial, np.ascontiguousarray(finished[:rows], dtype='<f4').tobytes())
        elif rows:
            raise ValueError(f'the output has {rows} rows but there is no {path} or {self.partial}: the run being '
                             'resumed did not write embeddings (resume it without --embeddings)')

    def _load(self) -> np.ndarray:
        if self.path.suffix.lower() == '.npy':
            return np.load(self.path, mmap_mode='r')
        from safetensors import safe_open
        with safe_open(str(self.path), framework='numpy') as f:
            return f.get_tensor(EMBEDDINGS_KEY)

    def append(self, embeddings: np.ndarray) -> None:
        append_durably(self.partial, np.ascontiguousarray(embeddings, dtype='<f4').tobytes())
        self.rows += len(embeddings)

    def finish(self, rows_of: str) -> None:
        """Write ``PATH`` (header, then the partial file's bytes, streamed) and remove the partial file."""
        if not self.partial.exists():
            append_durably(self.partial, b'')  # no image at all: an empty (0, size) array
        with atomic_file(self.path) as tmp, open(tmp, 'wb') as f, open(self.partial, 'rb') as rows:
            self._header(f, rows_of)
            shutil.copyfileobj(rows, f, 1 << 20)
        self.partial.unlink()

    def _header(self, f: BinaryIO, rows_of: str) -> None:
        shape = (self.rows, self.size)
        if self.path.suffix.lower() == '.npy':
            np.lib.format.write_array_header_1_0(f, {'descr': '<f4', 'fortran_order': False, 'shape': shape})
            return
        # safetensors: an 8-byte little-endian header length, the JSON header (padded to 8 bytes), the data
        header = json.dumps({'__metadata__': {'rows_of': rows_of},
                             EMBEDDINGS_KEY: {'dtype': 'F32', 'shape': list(shape),
                                              'data_offsets': [0, 4 * self.rows * self.size]}}).encode()
        header += b' ' * (-len(header) % 8)
        f.write(struct.pack('<Q', len(header)) + header)


class PredictionFiles:
    """``--output`` rows, its errors file and the optional embeddings, resumable (see the module docstring)."""

    def __init__(self, output: Path, columns: Sequence[str], embeddings: Optional[Path] = None,
                 embedding_size: int = 0):
        self.output, self.rows = output, _Rows(output, columns)
        self.errors = _Rows(errors_path(output), ['path', 'error'])
        self.embeddings = Embeddings(embeddings, embedding_size, self.rows.count) if embeddings else None
        self.written, self.failed = self.rows.count, self.errors.count
        #: :func:`path_key` of the paths with a row or an error already, counted
        self.done = self.rows.done
        self.done.update(self.errors.done)
        self.errors.done = Counter()

    def write(self, rows: List[Dict[str, Any]], embeddings: Optional[np.ndarray],
              failures: List[Tuple[str, str]]) -> None:
        if self.embeddings is not None and embeddings is not None:
            self.embeddings.append(embeddings)  # first: a row is never on disk without its embedding
        self.rows.append(rows)
        self.errors.append([{'path': path, 'error': reason} for path, reason in failures])
        self.written, self.failed = self.written + len(rows), self.failed + len(failures)

    def finish(self) -> str:
        if self.embeddings is not None:
            self.embeddings.finish(self.output.name)
        extra = f' and {self.embeddings.path}' if self.embeddings is not None else ''
        errors = f', {self.failed} failed (see {self.errors.path})' if self.failed else ''
        return f'{self.written} rows in {self.output}{extra}{errors}'


class Printer:
    """Rows to stdout as ``timm-sknet predict`` always printed them: the path, then ranked classes."""

    def __init__(self, topk: int):
        self.topk, self.written, self.failed = topk, 0, 0
        self.done: Counter[int] = Counter()

    def write(self, rows: List[Dict[str, Any]], embeddings: Optional[np.ndarray],
              failures: List[Tuple[str, str]]) -> None:
        for row in rows:
            print(f'{row["path"]}:')
            for rank in range(1, self.topk + 1):
                p, label, c = row[f'probability_{rank}'], row[f'label_{rank}'], row[f'index_{rank}']
                print(f'  {rank}. {p * 100:6.2f}%  {label} ({c})')
        self.written, self.failed = self.written + len(rows), self.failed + len(failures)

    def finish(self) -> str:
        return f'{self.written} images predicted' + (f', {self.failed} failed' if self.failed else '')
