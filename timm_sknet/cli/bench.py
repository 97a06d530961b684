"""``timm-sknet bench``: the benchmark runners of :mod:`timm_sknet.bench`."""
import argparse
import sys
from pathlib import Path
from typing import Any, Dict

import torch

from .arguments import CLIError, SubParsers


def _bench_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The runner's keyword arguments from the command line (each runner takes its own)."""
    from ..bench.concurrency import ConcurrencyRunner
    from ..bench.inference import OUR_PATHS
    if args.what == 'serve':
        return dict(our_model=args.model or 'sknet50', backend='eager' if args.backend == 'all' else args.backend,
                    image_size=args.image_size, quick=args.quick)
    if args.what == 'serve-load':
        backends = {} if args.backend == 'all' else {'backends': (args.backend,)}
        return dict(our_model=args.model or 'sknet50', image_size=args.image_size, quick=args.quick, **backends,
                    **({'seconds': args.seconds} if args.seconds else {}))
    options: Dict[str, Any] = dict(runs=args.runs, device=args.device, quick=args.quick, image_size=args.image_size)
    options.update({k: v for k, v in (('our_model', args.model), ('timm_model', args.timm_model)) if v})
    if args.what in ('inference', 'concurrency'):
        known = OUR_PATHS if args.what == 'inference' else ConcurrencyRunner.PATHS
        paths = [(b, p) for b, p in known if args.backend in ('all', b) and args.precision in ('all', p)]
        if not paths:
            raise CLIError(f'no {args.what} path has backend {args.backend} and precision {args.precision}')
        options.update(paths=None if args.backend == args.precision == 'all' else paths,
                       batch_sizes=args.batch_sizes or ((1, 8) if args.what == 'inference' else (1,)))
    else:
        options.update(memory=not args.no_memory)
        if args.what == 'backbone':
            from ..inference import BACKENDS
            options.update(batch_sizes=args.batch_sizes or (1, 2), optimize_backends=[
                b for b in BACKENDS if args.backend in ('all', b)] if args.dynamic_size else [])
    return options


def run(args: argparse.Namespace) -> int:
    from ..bench import RUNNERS, int8_accuracy, markdown, write_report
    if args.out and not Path(args.out).parent.is_dir():
        raise FileNotFoundError(f'folder {Path(args.out).parent} does not exist; create it or choose another --out')
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    if args.what == 'int8-accuracy':
        report = int8_accuracy(60, 8, log=log) if args.quick else int8_accuracy(log=log)
    else:
        report = RUNNERS[args.what](**_bench_options(args), log=log).run()
    print(markdown(report))
    if args.out:
        print('wrote {} and {}'.format(*write_report(report, Path(args.out))), file=sys.stderr)
    return 0


def add_parser(sub: SubParsers) -> None:
    from ..inference import BACKENDS, PRECISIONS
    p = sub.add_parser('bench', help='speed against timm\'s own SK models with the same weights (see benchmarks/)')
    p.add_argument('what', nargs='?', default='inference',
                   choices=('inference', 'eager', 'backbone', 'concurrency', 'int8-accuracy', 'serve', 'serve-load'),
                   help='inference: every backend and precision of optimize, vs timm run the same ways; '
                        'eager: eager inference and training steps with peak memory; backbone: features_only at '
                        '640 px as detectors run it; concurrency: one optimized model called from 1, 2 and 4 '
                        'threads at once, per backend; int8-accuracy: int8 against fp32; serve: the HTTP service '
                        'under 1, 2 and 4 clients (--backend: default eager); serve-load: the service under 1, 4, '
                        '16 and 64 clients per backend, without and with batching, against LitServe (installed '
                        'from benchmarks/requirements.txt)')
    p.add_argument('--quick', action='store_true', help='smoke test in seconds: proves it runs, measures nothing')
    p.add_argument('--model', default=None, help='our model (default: sknet50; sknet18 with --quick)')
    p.add_argument('--timm-model', default=None,
                   help="timm's twin of --model (default: skresnext50_32x4d; skresnet18 with --quick)")
    p.add_argument('--backend', choices=('all', *BACKENDS), default='all',
                   help='inference, concurrency, backbone --dynamic-size: only this backend')
    p.add_argument('--precision', choices=('all', *PRECISIONS), default='all',
                   help='inference, concurrency: only this precision')
    p.add_argument('--batch-sizes', type=int, nargs='+', default=None,
                   help='inference: default 1 8; backbone: default 1 2; concurrency: default 1')
    p.add_argument('--device', default='cpu', help='cpu or cuda')
    p.add_argument('--runs', type=int, default=9, help='timed runs of everything, alternating (median reported)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    p.add_argument('--seconds', type=float, default=None,
                   help='serve-load: seconds of load per row; each client sends at least one request (default: 10)')
    p.add_argument('--image-size', type=int, default=None, help='default: 224; backbone: 640')
    p.add_argument('--no-memory', action='store_true', help='eager, backbone: skip the peak-memory runs')
    p.add_argument('--dynamic-size', action='store_true',
                   help='backbone: instead, optimize() built for the size vs for any size (dynamic_size=True), per '
                        'backend (--backend; default all): build time, speed at the size, a new size\'s first call')
    p.add_argument('--out', default=None, help='write OUT.json and OUT.md (path without extension)')
    p.set_defaults(func=run)
