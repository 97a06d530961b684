"""The memory a ``timm-sknet predict --resume`` spends on the rows already written.

Writes a 1,000,000-row output (CSV and JSONL, top-5 columns as ``predict`` writes them, realistic paths), then in a
fresh process per file: imports what a run imports, notes VmRSS, loads the output for resume
(``PredictionFiles``: the rows are streamed, each path kept as a counted 8-byte hash), and reports the extra peak
(VmHWM) and held (VmRSS) memory, and the time. Run: ``python benchmarks/resume_memory.py [--rows N] [--dir DIR]``.
"""
import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = ['path', *(f'{what}_{r}' for r in range(1, 6) for what in ('index', 'wnid', 'label', 'probability'))]


def write_output(path: Path, rows: int) -> None:
    """``rows`` rows of predict's columns: paths as a phone-photo collection names them."""
    with open(path, 'w', newline='', encoding='utf-8') as f:
        writer = csv.writer(f, lineterminator='\n') if path.suffix == '.csv' else None
        if writer:
            writer.writerow(COLUMNS)
        for i in range(rows):
            values = [f'/data/photos/{2015 + i % 10}/{i % 12 + 1:02d}/IMG_{i:08d}.jpg',
                      *(v for r in range(5) for v in ((i * 7 + r) % 1000, f'n{(i * 7 + r) % 10 ** 8:08d}',
                                                      'great white shark', round(0.5 / (r + 1), 6)))]
            if writer:
                writer.writerow(values)
            else:
                f.write(json.dumps(dict(zip(COLUMNS, values))) + '\n')


def status_kb(field: str) -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith(field + ':'):
            return int(line.split()[1])
    raise KeyError(field)


def measure(path: str) -> None:
    """In this (fresh) process: the extra memory of loading ``path`` for resume, as one JSON line."""
    from timm_sknet.batch import output, predictor, run  # noqa: F401  (what a predict run has imported)
    before = status_kb('VmRSS')
    start = time.perf_counter()
    files = output.PredictionFiles(Path(path), COLUMNS)
    seconds = time.perf_counter() - start
    rows = files.written
    print(json.dumps({'file': Path(path).suffix, 'rows': rows, 'seconds': round(seconds, 1),
                      'peak_extra_mb': round((status_kb('VmHWM') - before) / 1024, 1),
                      'held_extra_mb': round((status_kb('VmRSS') - before) / 1024, 1),
                      'held_bytes_per_row': round((status_kb('VmRSS') - before) * 1024 / rows, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rows', type=int, default=1_000_000)
    parser.add_argument('--dir', default=None, help='where the outputs are written (default: a temporary folder)')
    parser.add_argument('--measure', default=None, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f'# {args.rows} rows; {platform.processor() or platform.machine()}, Python {platform.python_version()}')
        for suffix in ('.csv', '.jsonl'):
            path = Path(tmp, f'preds{suffix}')
            write_output(path, args.rows)
            print(f'# {path.name}: {path.stat().st_size / 2 ** 20:.0f} MiB', flush=True)
            subprocess.run([sys.executable, __file__, '--measure', str(path)], check=True)


if __name__ == '__main__':
    main()
