"""What a benchmark runner returns, and how it is written: JSON and markdown tables."""
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..file_io import write_text_atomic

__all__ = ['Report', 'markdown', 'write_report']


@dataclass
class Report:
    """What a runner measured: a title, the machine, and tables (rows of equal keys), written by :func:`write_report`."""
    title: str
    machine: Dict[str, Any]
    tables: Dict[str, List[Dict[str, Any]]] = field(default_factory=dict)


def _cell(value: Any) -> str:
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.0f}' if abs(value) >= 100 else f'{value:.1f}' if abs(value) >= 10 else f'{value:.2f}'
    return str(value)


def markdown(report: Report) -> str:
    """The report as markdown: title, machine, then each table under its name."""
    m = report.machine
    lines = [report.title, '', f"Machine: {m['description']}; {m['threads']} threads; torch {m['torch']}, "
             f"timm {m['timm']}; peak (best GEMM, GFLOP/s): "
             + (', '.join(f'{k} {v:.0f}' for k, v in m['peak_gflops'].items()) or 'not measured')
             + (f"; load average (1, 5, 15 min) {m['load_average']} before, {m['load_average_after']} after"
                if 'load_average' in m else '')]
    for name, rows in report.tables.items():
        if not rows:
            continue
        keys = list(rows[0])
        lines += ['', f'{name}:', '', '| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
        lines += ['| ' + ' | '.join(_cell(r.get(k)) for k in keys) + ' |' for r in rows]
    return '\n'.join(lines)


def write_report(report: Report, out: Path) -> Tuple[Path, Path]:
    """Write ``out.json`` and ``out.md`` (each whole or not at all); returns both paths."""
    out = Path(out)
    json_path, md_path = out.with_suffix('.json'), out.with_suffix('.md')
    write_text_atomic(json_path, json.dumps(asdict(report), indent=2) + '\n')
    write_text_atomic(md_path, markdown(report) + '\n')
    return json_path, md_path
