"""What a user reads when something goes wrong, or asks for help, points the right way in the context it is read.

Errors name CLI flags on the command line and keywords in Python, never a remedy already in effect, and the right
alternative model; every ``--help`` is plain text that shows each option's default.
"""
import argparse
import re

import pytest
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SMALL

import timm

from timm_sknet import WeightsError
from timm_sknet.cli import build_parser, main

PYTHON_WORDS = ('pretrained_cfg_overlay', 'pretrained=False', 'timm.create_model(')


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def _as_typed(action: argparse.Action, shown: str):
    """What the parser makes of ``shown`` typed after the option: the value a stated default must equal."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return {'on': True, 'off': False}.get(shown, shown)
    values = [(action.type or str)(token) for token in shown.split()]
    return values if action.nargs not in (None, '?') else values[0]


def test_every_help_is_plain_text_and_shows_every_options_real_default(monkeypatch):
    monkeypatch.setenv('COLUMNS', '1000')  # argparse wraps to the terminal: one line per option's help
    parsers = list(_parsers(build_parser()))
    assert {p.prog.split()[-1] for p in parsers} >= {'timm-sknet', 'list', 'convert', 'train', 'convert-caffe'}
    checked = 0
    for parser in parsers:
        text = parser.format_help()
        assert not re.search(r'``|:(func|class|mod|meth):`', text), parser.prog
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            where = f'{parser.prog} {"/".join(action.option_strings)}'
            invocation = formatter._format_action_invocation(action)
            shown = re.search(rf'^  {re.escape(invocation)}[ \n]+(.*)$', text, re.MULTILINE).group(1)
            stated = re.search(r'\(default: ([^;)]+)[;)]', shown)
            if action.required:
                assert 'default' not in shown.lower(), f'{where} is required, yet its help says: {shown}'
                continue
            assert stated or 'default' in shown.lower(), f'{where} shows no default: {shown!r}'
            if stated and stated.group(1) == 'none':
                assert not action.default, f'{where} says "default: none", but it is {action.default!r}'
            elif stated and action.default is not None:  # written by the formatter or by hand: the real one
                assert _as_typed(action, stated.group(1)) == (
                    list(action.default) if isinstance(action.default, tuple) else action.default), where
                checked += 1
    assert checked > 50


def test_the_formatter_writes_the_real_default_and_strips_markup():
    parser = build_parser()
    parser.add_argument('--flag', action='store_true', help='a ``literal`` and :func:`~a.b`')
    parser.add_argument('--sizes', type=int, nargs='+', default=[1, 8], help='sizes')
    text = ' '.join(parser.format_help().split())
    assert 'a literal and a.b (default: off)' in text and 'sizes (default: 1 8)' in text


def _cli_error(capsys, *argv) -> str:
    assert main([str(a) for a in argv]) == 2
    return capsys.readouterr().err


def test_sknet101_points_to_the_caffe_model_in_python_and_on_the_command_line(capsys, tmp_path):
    with pytest.raises(WeightsError) as info:
        timm.create_model('sknet101', pretrained=True)
    python = str(info.value)
    assert 'sknet101_caffe' in python and 'convert-caffe' in python and 'pretrained=False' in python
    assert 'pretrained_cfg_overlay' in python and 'published for it anywhere' not in python
    cli = _cli_error(capsys, 'convert', tmp_path / 'out', '--model', 'sknet101', '--pretrained')
    assert 'sknet101_caffe' in cli and '--checkpoint FILE' in cli and '--pretrained' in cli
    assert not [w for w in PYTHON_WORDS if w in cli], cli
    with pytest.raises(WeightsError) as info:   # the command line's context ends with the command
        timm.create_model('sknet152', pretrained=True)
    assert 'pretrained=False' in str(info.value) and '_caffe' not in str(info.value)


def test_the_caffe_hint_loads_the_folder_the_way_the_context_can(capsys, tmp_path):
    with pytest.raises(WeightsError, match=r"timm.create_model\('local-dir:sknet50-caffe', pretrained=True\)"):
        timm.create_model('sknet50_caffe', pretrained=True)
    cli = _cli_error(capsys, 'convert', tmp_path / 'out', '--model', 'sknet50_caffe', '--pretrained')
    assert '--model local-dir:sknet50-caffe' in cli and 'timm.create_model' not in cli


def test_a_local_dir_folder_is_a_model_on_the_command_line(capsys, tmp_path):
    """What the errors above suggest works: ``--model local-dir:FOLDER --pretrained``."""
    from timm_sknet.hub import export_hub_folder
    export_hub_folder(timm.create_model('sknet_tiny.synthetic', pretrained=True), tmp_path / 'tiny')
    assert main(['convert', str(tmp_path / 'again'), '--model', f'local-dir:{tmp_path / "tiny"}', '--pretrained']) == 0
    assert (tmp_path / 'again' / 'model.safetensors').read_bytes() == (tmp_path / 'tiny' / 'model.safetensors').read_bytes()


def test_offline_errors_never_suggest_going_offline(capsys, tmp_path, hf_cache, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(WeightsError) as info:
        timm.create_model('sknet18', pretrained=True, **SMALL)
    python = str(info.value)
    assert 'unset HF_HUB_OFFLINE' in python and 'set HF_HUB_OFFLINE=1' not in python
    assert "pretrained_cfg_overlay=dict(file=" in python
    cli = _cli_error(capsys, 'convert', tmp_path / 'out', '--model', 'sknet18', '--pretrained')
    assert 'unset HF_HUB_OFFLINE' in cli and 'set HF_HUB_OFFLINE=1' not in cli and '--checkpoint' in cli
    assert not [w for w in PYTHON_WORDS if w in cli], cli


def test_an_unreachable_hub_suggests_the_offline_routes_in_the_contexts_words(capsys, tmp_path, dead_endpoint):
    with pytest.raises(WeightsError) as info:
        timm.create_model('sknet18', pretrained=True, **SMALL)
    python = str(info.value)
    assert 'could not be reached' in python and 'set HF_HUB_OFFLINE=1' in python
    assert "pretrained_cfg_overlay=dict(file=" in python and "timm.create_model('local-dir:" in python
    cli = _cli_error(capsys, 'convert', tmp_path / 'out', '--model', 'sknet18', '--pretrained')
    assert 'set HF_HUB_OFFLINE=1' in cli and '--checkpoint /path/to/model.safetensors' in cli
    assert '--model local-dir:/path/to/folder' in cli and not [w for w in PYTHON_WORDS if w in cli], cli


def test_convert_writes_what_the_user_states_about_their_weights(capsys, tmp_path):
    import yaml

    from timm_sknet.hub import export_hub_folder
    export_hub_folder(timm.create_model('sknet_tiny', num_classes=3), tmp_path / 'mine')   # "trained by the user"
    argv = ['convert', str(tmp_path / 'out'), '--model', f'local-dir:{tmp_path / "mine"}', '--pretrained',
            '--dataset', 'me/shapes', '--dataset', 'me/more', '--license', 'cc-by-4.0']
    assert main(argv) == 0
    card = (tmp_path / 'out' / 'README.md').read_text()
    meta = yaml.safe_load(card.split('\n---\n')[0].removeprefix('---\n'))
    assert meta['datasets'] == ['me/shapes', 'me/more'] and meta['license'] == 'cc-by-4.0'
    assert '- **Trained on:** me/shapes, me/more\n' in card
