"""Choosing a device: ``--device`` / ``device=`` for bulk runs, checked before any model is built.

The CPU path runs here; the CUDA path is written and refused clearly where there is no GPU (this suite's
machines have none; benchmarks/gpu_check.py runs it where there is one).
"""
import csv
import time

import pytest
import torch

from timm_sknet.batch.predictor import BatchPredictor
from timm_sknet.cli import main
from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.inference import resolve_device

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='tests the refusal on a machine without CUDA')


def test_auto_is_the_gpu_where_there_is_one_else_the_cpu():
    assert resolve_device('auto') == torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    assert resolve_device('cpu') == torch.device('cpu')


@pytest.mark.parametrize('bad', ['gpu', 'cuda:x', 'mps'])
def test_a_device_that_is_no_device_is_refused_with_the_choices(bad):
    with pytest.raises(ValueError, match='auto, cpu, cuda or cuda:N'):
        resolve_device(bad)


@no_gpu
@pytest.mark.parametrize('device', ['cuda', 'cuda:1'])
def test_cuda_without_a_gpu_is_refused_before_any_model_is_built(device, capsys):
    start = time.perf_counter()
    rc = main(['predict', str(SAMPLES_DIR), '--model', 'sknet50', '--device', device])  # sknet50: a download
    err = capsys.readouterr().err
    assert rc == 2 and 'no CUDA device' in err and 'use cpu or auto' in err
    assert time.perf_counter() - start < 5  # no model was built, nothing fetched
    with pytest.raises(ValueError, match='no CUDA device'):
        BatchPredictor('sknet50', device=device)


def test_predict_on_the_cpu_device_gives_the_default_rows(tmp_path, capsys):
    outputs = []
    for device in ([], ['--device', 'cpu']):
        out = tmp_path / f'p{len(outputs)}.csv'
        args = ['predict', str(SAMPLES_DIR), '--model', 'sknet_tiny.synthetic', '--workers', '0', '--output', str(out)]
        assert main(args + device) == 0, capsys.readouterr().err
        with open(out, newline='') as f:
            outputs.append([(r['path'], r['index_1'], r['probability_1']) for r in csv.DictReader(f)])
    assert outputs[0] == outputs[1] and len(outputs[0]) > 0


@no_gpu
def test_serve_refuses_cuda_without_a_gpu_before_it_builds_a_model(capsys):
    start = time.perf_counter()
    assert main(['serve', '--model', 'sknet50', '--device', 'cuda', '--port', '0']) == 2
    assert 'no CUDA device' in capsys.readouterr().err
    assert time.perf_counter() - start < 5
