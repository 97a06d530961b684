"""Command line: ``timm-sknet`` or ``python -m timm_sknet``.

With no subcommand it runs the main job: the model table, then the embedded model's predictions and scale analysis.
Each subcommand is a module of this package with ``add_parser(subparsers)`` and ``run(args)``; options that several
share (model, weights, runtime) are in :mod:`.arguments`.
"""
import argparse
import sys
from typing import List, Optional

from ..data.images import ImageError
from ..errors import WeightsError, command_line_context
from ..models.checkpoint import CheckpointError
from . import attention, bench, convert, convert_caffe, env, export, list_models, predict, serve, train
from .arguments import CLIError
from .help_format import Parser

__all__ = ['CLIError', 'build_parser', 'main']

#: Exceptions that are the user's to fix: printed as one ``timm-sknet: error: ...`` line, exit status 2.
#: ``FileExistsError`` / ``FileNotFoundError`` come from the writers (existing output folder, missing folder).
USER_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, ImageError, WeightsError, CheckpointError,
               FloatingPointError)


def _cmd_main_job(args: argparse.Namespace) -> int:
    """The main job, offline: the model table, then the embedded model's predictions and scale analysis."""
    from .list_models import model_table
    from .main_job import run_main_job
    print(model_table())
    print()
    run_main_job(args.out)
    return 0


#: in the order ``--help`` lists them
SUBCOMMANDS = (list_models, predict, bench, export, convert, convert_caffe, attention, train, serve, env)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog='timm-sknet', description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='output/main_job',
                        help='folder for the main job\'s CSVs and plot (default: output/main_job)')
    parser.set_defaults(func=_cmd_main_job)
    sub = parser.add_subparsers(title='commands')
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    return parser


def _one_line(error: BaseException) -> str:
    return ' '.join(str(error).split()) or type(error).__name__


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with command_line_context():  # remedies name flags, not Python keywords (timm_sknet.errors.remedy)
            return args.func(args)
    except (CLIError, *USER_ERRORS) as e:
        print(f'{parser.prog}: error: {_one_line(e)}', file=sys.stderr)
        return 2
