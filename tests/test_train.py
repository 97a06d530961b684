"""``timm-sknet train``: learning, Hub-layout checkpoints, exact resume, DDP on CPU, SyncBatchNorm, errors.

Every run uses a tiny SKNet (stages 8-16-32-64, one block each) on 32x32 synthetic shapes, so a run is a
second or two on 2 cores.
"""
import argparse
import csv
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import randomize_batchnorm
from loopback_guard import sitecustomize as loopback_guard
from safetensors.torch import load_file

import timm
from timm.layers import BatchNormAct2d, SyncBatchNormAct, convert_sync_batchnorm

from timm_sknet import SelectiveKernelAttn
from timm_sknet.data.synthetic import write_image_folder
from timm_sknet.training.arguments import add_train_arguments, validate_args
from timm_sknet.training.checkpoint import TRAINING_STATE_FILE, save_checkpoint
from timm_sknet.training.job import run_train, state_digest

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ['--model', 'sknet_tiny', '--model-kwargs', 'layers=(1,1,1,1)', 'channels=(8,16,32,64)', 'stem_width=8',
        '--img-size', '32', '--workers', '0', '--log-interval', '0']


def _args(out: Path, *extra: str) -> argparse.Namespace:
    argv = [*TINY, '--output', str(out), '--synthetic-train-size', '64', '--synthetic-val-size', '32',
            '--batch-size', '16', '--epochs', '2', *extra]
    return add_train_arguments(argparse.ArgumentParser()).parse_args(argv)


def _tiny_model(**kwargs):
    return timm.create_model('sknet_tiny', layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, **kwargs)


def test_training_reduces_the_loss(tmp_path):
    # disks vs squares, large objects, 32 images seen 12 times: the loss must fall well below its start
    summary = run_train(_args(tmp_path, '--synthetic-classes', '2', '--synthetic-scale-range', '0.6', '0.9',
                              '--synthetic-train-size', '32', '--epochs', '12', '--lr', '3e-3', '--warmup-epochs', '0',
                              '--weight-decay', '0', '--no-aug', '--smoothing', '0'))
    history = json.loads((tmp_path / 'summary.json').read_text())['final']
    assert summary['complete'] and history['epoch'] == 12
    with open(tmp_path / 'metrics.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    losses = [float(r['train_loss']) for r in rows]
    assert len(losses) == 12
    assert sum(losses[-2:]) / 2 < 0.8 * losses[0], f'train loss did not go down: {losses}'
    # the schedule steps every update: cosine from --lr to the default --min-lr 1e-5 over 12 epochs x 2 updates
    # (SGDR's formula, lr_t = min + (max - min) (1 + cos(pi t / T)) / 2), as recorded at the end of each epoch
    expected = [1e-5 + (3e-3 - 1e-5) * (1 + math.cos(math.pi * 2 * epoch / 24)) / 2 for epoch in range(1, 13)]
    assert [float(r['lr']) for r in rows] == pytest.approx(expected, rel=1e-6)


def test_model_folder_loads_back_through_timm_local_dir(tmp_path):
    summary = run_train(_args(tmp_path, '--model-ema'))
    folder = tmp_path / 'model'
    assert {p.name for p in folder.iterdir()} == {'config.json', 'model.safetensors'}
    config = json.loads((folder / 'config.json').read_text())
    assert config['architecture'] == 'sknet_tiny'
    assert config['label_names'] == summary['classes']
    assert config['pretrained_cfg']['input_size'] == [3, 32, 32]
    loaded = timm.create_model(f'local-dir:{folder}', pretrained=True)
    # exactly the weights the run ended with (the EMA, digest taken in memory before saving)
    assert state_digest(loaded) == summary['state_digest']
    assert loaded.pretrained_cfg['crop_pct'] == 1.0
    # ... and those are the EMA weights of the last checkpoint's training state, not the trained weights
    exported = load_file(folder / 'model.safetensors')
    ema = torch.load(tmp_path / 'checkpoint' / TRAINING_STATE_FILE, weights_only=True)['ema']
    trained = load_file(tmp_path / 'checkpoint' / 'model.safetensors')
    assert exported.keys() <= ema.keys() and exported.keys() == trained.keys()
    assert all(torch.equal(exported[k], ema[k]) for k in exported)
    assert not all(torch.equal(exported[k], trained[k]) for k in exported), 'EMA and trained weights differ'


def test_ema_decay_is_the_one_asked_for(tmp_path):
    """With --model-ema-decay 0 the average is the latest weights: the export equals the trained weights."""
    run_train(_args(tmp_path, '--model-ema', '--model-ema-decay', '0', '--epochs', '1'))
    exported = load_file(tmp_path / 'model' / 'model.safetensors')
    trained = load_file(tmp_path / 'checkpoint' / 'model.safetensors')
    assert exported.keys() == trained.keys()
    assert all(torch.equal(exported[k], trained[k]) for k in exported)


def test_checkpoint_roundtrip_gives_identical_outputs(tmp_path):
    model = randomize_batchnorm(_tiny_model(num_classes=5)).eval()
    save_checkpoint(tmp_path / 'ckpt', model, {'epoch': 1}, label_names=list('abcde'))
    loaded = timm.create_model(f'local-dir:{tmp_path / "ckpt"}', pretrained=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.pretrained_cfg['label_names'] == list('abcde')
    assert torch.load(tmp_path / 'ckpt' / TRAINING_STATE_FILE, weights_only=True) == {'epoch': 1}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')], 'no temporary folders left behind'


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    extra = ('--model-ema', '--model-ema-decay', '0.9', '--epochs', '3')
    straight = run_train(_args(tmp_path / 'straight', *extra))
    first = run_train(_args(tmp_path / 'split', *extra, '--stop-after-epoch', '1'))
    assert not first['complete'] and not (tmp_path / 'split' / 'model').exists()
    state = torch.load(tmp_path / 'split' / 'checkpoint' / TRAINING_STATE_FILE, weights_only=True)
    assert state['epoch'] == 1 and state['num_updates'] == 4  # 64 images / batch 16
    resumed = run_train(_args(tmp_path / 'split', *extra, '--resume', str(tmp_path / 'split')))
    assert resumed['complete']

    a, b = (load_file(tmp_path / run / 'checkpoint' / 'model.safetensors') for run in ('straight', 'split'))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa, sb = (torch.load(tmp_path / run / 'checkpoint' / TRAINING_STATE_FILE, weights_only=True)
              for run in ('straight', 'split'))
    assert sa['num_updates'] == sb['num_updates'] == 12
    steps = {int(v['step']) for v in sb['optimizer']['state'].values()}
    assert steps == {12}, 'optimizer step count restored and continued'
    for pid, va in sa['optimizer']['state'].items():
        for name, t in va.items():
            assert torch.equal(t, sb['optimizer']['state'][pid][name]), (pid, name)
    for k in sa['ema']:
        assert torch.equal(sa['ema'][k], sb['ema'][k]), k
    assert sa['scheduler'] == sb['scheduler']
    assert straight['state_digest'] == resumed['state_digest']


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path):
    out = tmp_path / 'ddp'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc-per-node', '2',
           '--master-addr', '127.0.0.1', '--master-port', str(_free_port()),
           '-m', 'timm_sknet', 'train', *TINY, '--output', str(out), '--synthetic-train-size', '64',
           '--synthetic-val-size', '16', '--batch-size', '8', '--epochs', '1', '--model-ema', '--device', 'cpu']
    env = loopback_guard.child_environment(
        dict(os.environ, OMP_NUM_THREADS='1', GLOO_SOCKET_IFNAME='lo', PYTHONPATH=str(REPO_ROOT)))
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['world_size'] == 2
    digests = summary['rank_state_digests']
    assert len(digests) == 2 and digests[0] == digests[1], digests
    # the trained (not only the EMA) weights agree too: BatchNorm statistics are averaged across processes
    model_digests = summary['rank_model_digests']
    assert len(model_digests) == 2 and model_digests[0] == model_digests[1] != digests[0], model_digests
    assert summary['ranks_in_sync']
    # 64 images over 2 processes at batch 8: 4 synchronised steps, not 8 independent ones
    state = torch.load(out / 'checkpoint' / TRAINING_STATE_FILE, weights_only=True)
    assert state['num_updates'] == 4
    loaded = timm.create_model(f'local-dir:{out / "model"}', pretrained=True)
    assert state_digest(loaded) == digests[0]


def test_sync_batchnorm_reaches_every_norm_including_the_sk_attention():
    model = randomize_batchnorm(_tiny_model())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    converted = convert_sync_batchnorm(model)
    attn_bns = [m.bn for m in converted.modules() if isinstance(m, SelectiveKernelAttn)]
    assert attn_bns and all(type(bn) is torch.nn.SyncBatchNorm for bn in attn_bns)
    norms = [m for m in converted.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert all(isinstance(m, (torch.nn.SyncBatchNorm, SyncBatchNormAct)) for m in norms)
    assert not any(type(m) in (torch.nn.BatchNorm2d, BatchNormAct2d) for m in norms)
    after = converted.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_sync_bn_on_cpu_processes_is_refused_with_a_remedy(tmp_path):
    with pytest.raises(ValueError, match='--sync-bn needs GPU'):
        validate_args(_args(tmp_path, '--sync-bn'), world_size=2, device=torch.device('cpu'))


def test_imagefolder_with_amp_bf16_grad_checkpointing_channels_last(tmp_path):
    root = write_image_folder(tmp_path / 'data', {'train': 32, 'val': 16}, image_size=32, num_classes=3)
    summary = run_train(_args(tmp_path / 'run', '--data-dir', str(root), '--val-split', 'val', '--epochs', '1',
                              '--amp', '--amp-dtype', 'bfloat16', '--grad-checkpointing', '--channels-last'))
    assert summary['complete'] and summary['classes'] == ['disk', 'square', 'triangle']
    assert math.isfinite(summary['final']['train_loss'])
    config = json.loads((tmp_path / 'run' / 'model' / 'config.json').read_text())
    assert config['num_classes'] == 3 and config['label_names'] == ['disk', 'square', 'triangle']


def test_fine_tune_from_a_trained_folder_replaces_the_classifier(tmp_path):
    run_train(_args(tmp_path / 'base', '--epochs', '1'))
    base = tmp_path / 'base' / 'model'
    summary = run_train(_args(tmp_path / 'ft', '--model', f'local-dir:{base}', '--pretrained',
                              '--synthetic-classes', '3', '--epochs', '1'))
    loaded = timm.create_model(f'local-dir:{tmp_path / "ft" / "model"}', pretrained=True)
    assert summary['classes'] == ['disk', 'square', 'triangle'] and loaded.num_classes == 3
    base_sd = load_file(base / 'model.safetensors')
    assert base_sd['fc.weight'].shape[0] == 8 and loaded.fc.weight.shape[0] == 3


@pytest.mark.parametrize('extra, error, match', [
    (('--batch-size', '1'), ValueError, 'batch-size must be >= 2'),
    (('--data-dir', '/nonexistent/folder'), FileNotFoundError, 'is not a folder'),
    (('--resume', '/nonexistent/run'), FileNotFoundError, 'no checkpoint to resume'),
    (('--synthetic-train-size', '8'), ValueError, 'less than one batch'),
])
def test_bad_options_are_explained(tmp_path, extra, error, match):
    with pytest.raises(error, match=match):
        run_train(_args(tmp_path, *extra))


def test_resume_with_another_architecture_is_refused(tmp_path):
    run_train(_args(tmp_path / 'a', '--epochs', '2', '--stop-after-epoch', '1'))
    args = _args(tmp_path / 'b', '--resume', str(tmp_path / 'a'))
    args.model, args.model_kwargs = 'sknet18', {}
    with pytest.raises(ValueError, match='resume with --model sknet_tiny'):
        run_train(args)


def test_a_data_dir_without_a_validation_folder_is_refused(tmp_path):
    """timm's dataset search falls back to the whole folder for a missing split: validating on training images."""
    root = write_image_folder(tmp_path / 'data', {'train': 12}, image_size=32, num_classes=3)
    with pytest.raises(FileNotFoundError, match='has no validation/ folder'):
        run_train(_args(tmp_path / 'run', '--data-dir', str(root), '--epochs', '1'))
    assert not (tmp_path / 'run' / 'model').exists()


def test_a_diverging_run_ends_with_one_line_from_the_command(tmp_path, capsys):
    from timm_sknet.cli import main

    rc = main(['train', *TINY, '--output', str(tmp_path / 'run'), '--synthetic-train-size', '32',
               '--synthetic-val-size', '16', '--batch-size', '16', '--epochs', '1', '--opt', 'sgd', '--lr', '1e30',
               '--warmup-epochs', '0'])
    out, err = capsys.readouterr()
    assert rc == 2 and err.startswith('timm-sknet: error: loss is') and 'lower --lr' in err and 'Traceback' not in err
