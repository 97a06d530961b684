"""What the pages and docstrings say about a model's shape is what the model is.

Every clause of the README, the weights card, the docs and the models' docstrings that names a model (at its start,
or in its section's heading) is read for shape statements: stem width, stage widths, blocks per stage, number of
SK paths (M), kernels and dilations, groups (G), r and L of d = max(C/r, L), d of one stage, split input,
parameter counts. Each is checked against the model timm builds (on the meta device), read from its modules here.
"""
import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch

import timm

from timm_sknet.layers import SelectiveKernel

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / 'README.md', REPO / 'weights_card.md', *sorted((REPO / 'docs').glob('*.md'))]
MODELS = timm.list_models(module='sknets')
_NAME = '|'.join(sorted(map(re.escape, MODELS), key=len, reverse=True))
#: the model names a clause starts with (``sknet50`` / ``sknet101`` are ..., | sknet18 | ..., sknet_tiny: ...)
_SUBJECTS = re.compile(rf'^[\s|*>-]*((?:`?(?:{_NAME})(?:\.\w+)?`?(?:\s*(?:/|,|and)\s*)?)+)(?![\w-])')
_ORDINAL = {'first': 0, 'second': 1, 'third': 2, 'fourth': 3}
_SEQ = r'(\d+(?:-\d+){3})'
_STATEMENTS = {  # name: pattern whose groups state it
    'stem': re.compile(r'\bstem(?: conv)?(?: stays)? (\d+)\b'),
    'stage widths': re.compile(rf'\bstages? {_SEQ}(?![\w-])'),
    'blocks': re.compile(rf'(?<![\w-])(?<!stages )(?<!stage ){_SEQ}(?![\w-])'),
    'paths': re.compile(r'\bM ?= ?(\d+)'),
    'groups': re.compile(r'\bG ?= ?(\d+)'),
    'r and L': re.compile(r'\br ?= ?(\d+), L ?= ?(\d+)|d = max\(C ?/ ?(\d+), (\d+)\)'),
    'stage d': re.compile(r'\bd = (\d+) in the (first|second|third|fourth) stage'),
    'dilated path': re.compile(r'3x3 (?:with )?dil(?:ation|\.)? ?(\d+)'),
    'split input': re.compile(r'\bsplit input\b|input split across'),
    'params': re.compile(r'(?<![\w.])(\d+\.\d+) ?M param'),
}


@lru_cache(maxsize=None)
def shape(name: str) -> dict:
    """The model's shape, read from the modules timm builds."""
    with torch.device('meta'):
        model = timm.create_model(name)
    stages = [getattr(model, f'layer{i}') for i in range(1, 5)]
    units = [[m for m in stage.modules() if isinstance(m, SelectiveKernel)] for stage in stages]
    stem = model.conv1 if isinstance(model.conv1, torch.nn.Conv2d) else model.conv1[-1]
    return {
        'stem': stem.out_channels, 'stage widths': [info['num_chs'] for info in model.feature_info[1:]],
        'blocks': [len(stage) for stage in stages], 'units': [(u.out_channels, u.attn.fc_reduce.out_channels)
                                                             for stage in units for u in stage],
        'stage d': [{u.attn.fc_reduce.out_channels for u in stage} for stage in units],
        'paths': {len(u.paths) for stage in units for u in stage},
        'groups': {p.conv.groups for stage in units for u in stage for p in u.paths},
        'kernels': {(p.conv.kernel_size[0], p.conv.dilation[0]) for stage in units for u in stage for p in u.paths},
        'split input': {u.split_input for stage in units for u in stage},
        'params': sum(p.numel() for p in model.parameters()),
    }


def wrong(statement: str, values: Tuple[Optional[str], ...], model: dict) -> bool:
    """Whether the statement with these captured values is false of ``model``."""
    v = [x for x in values if x is not None]
    if statement in ('stem', 'paths', 'groups'):
        return model[statement] != int(v[0]) if statement == 'stem' else model[statement] != {int(v[0])}
    if statement in ('stage widths', 'blocks'):
        return model[statement] != [int(n) for n in v[0].split('-')]
    if statement == 'r and L':
        r, min_d = int(v[0]), int(v[1])
        return any(d != max(round(c / r), min_d) for c, d in model['units'])
    if statement == 'stage d':
        return model['stage d'][_ORDINAL[v[1]]] != {int(v[0])}
    if statement == 'dilated path':
        return (3, int(v[0])) not in model['kernels']
    if statement == 'split input':
        return model['split input'] != {True}
    return round(model['params'] / 1e6, 2) != float(v[0])  # params, as the pages round them


def clauses(text: str) -> List[Tuple[str, str]]:
    """[(heading, clause)]: table rows, list items and sentences / semicolon parts, with the section heading."""
    heading, found = '', []
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    for block in re.split(r'\n(?=\s*(?:[-*|#]|\n))', text):
        if block.lstrip().startswith('#'):
            heading = block.strip()
            continue
        if block.lstrip().startswith('|'):
            found += [(heading, row) for row in block.splitlines()]
            continue
        found += [(heading, part) for part in re.split(r'(?<=[.;])\s+(?=[`A-Z(]|sknet)', ' '.join(block.split()))]
    return found


def subjects(heading: str, clause: str) -> List[str]:
    """The models a clause speaks of: those it starts with, or else the one its section's heading starts with."""
    for text in (clause, heading.lstrip('#')):
        m = _SUBJECTS.match(text)
        if m:
            return [n for n in re.findall(rf'(?<![\w-])({_NAME})(?![\w-])', m.group(1))]
    return []


def mismatches(text: str, where: str) -> Tuple[List[str], List[Tuple[str, str, str]]]:
    """(false statements, [(where, model, statement)] checked) of one page or docstring."""
    false, checked = [], []
    for heading, clause in clauses(text):
        names = subjects(heading, clause)
        params_row = re.match(r'\|\s*params\s*\|\s*([\d,]+)', clause)
        for name in names:
            if params_row:
                checked.append((where, name, 'params'))
            if params_row and int(params_row.group(1).replace(',', '')) != shape(name)['params']:
                false.append(f'{where}: {name}: {clause.strip()} (it has {shape(name)["params"]:,} parameters)')
            for statement, pattern in _STATEMENTS.items():
                for m in pattern.finditer(clause):
                    checked.append((where, name, statement))
                    if wrong(statement, m.groups(), shape(name)):
                        false.append(f'{where}: {name}: {statement} in "{clause.strip()}" '
                                     f'(the model: {shape(name)[statement] if statement in shape(name) else "-"})')
    return false, checked


def _docstrings() -> Dict[str, str]:
    """Module and function docstrings of timm_sknet/models; an entrypoint's is headed by its model's name."""
    found = {}
    for path in sorted((REPO / 'timm_sknet' / 'models').glob('*.py')):
        tree = ast.parse(path.read_text(encoding='utf-8'))
        found[str(path.relative_to(REPO))] = ast.get_docstring(tree) or ''
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name in MODELS:
                found[f'{path.relative_to(REPO)}:{node.name}'] = f'# {node.name}\n\n{ast.get_docstring(node) or ""}'
    return found


def test_the_pages_and_docstrings_describe_the_models_as_they_are():
    false, checked = [], []
    sources = {str(p.relative_to(REPO)): p.read_text(encoding='utf-8') for p in PAGES} | _docstrings()
    for where, text in sources.items():
        f, c = mismatches(text, where)
        false += f
        checked += c
    assert false == []
    found = {(where, name, statement) for where, name, statement in checked}
    assert {('weights_card.md', 'sknet_tiny', 'stem'), ('weights_card.md', 'sknet_tiny', 'stage widths'),
            ('README.md', 'sknet50', 'groups'), ('docs/models.md', 'sknet152', 'blocks'),
            ('timm_sknet/models/sknets.py:sknet_tiny', 'sknet_tiny', 'params'),
            ('timm_sknet/models/sknets.py', 'sknet101', 'blocks'), ('weights_card.md', 'sknet_tiny', 'params'),
            ('timm_sknet/models/sknets.py:sknet101_caffe', 'sknet101_caffe', 'params')} <= found
    assert len(found) >= 55


@pytest.mark.parametrize('text, statement', [
    ('## sknet_tiny.synthetic\n\n| | |\n|---|---|\n| model | `sknet_tiny`: sknet18 layout (stem 16) |', 'stem'),
    ('- `sknet50` / `sknet101` are the paper\'s: M = 2 paths, G = 16 groups.', 'groups'),
    ('`sknet18` / `sknet34` are timm\'s layout, d = max(C/16, 32).', 'r and L'),
    ('| sknet34 | ResNet-34 | 3-4-6-4 | split input |', 'blocks'),
    ('sknet101_caffe: d = 32 in the second stage.', 'stage d'),
    ('sknet50: a 3x3 with dilation 3.', 'dilated path'),
    ('sknet_tiny: stages 16-32-64-256, 0.74M params.', 'stage widths'),
    ('sknet_tiny: 0.75M params.', 'params'),
    ('sknet50 has split input.', 'split input'),
])
def test_a_false_statement_is_found(text, statement):
    false, checked = mismatches(text, 'page')
    assert any(f' {statement} in ' in f for f in false), (false, checked)
