"""``timm_sknet.train``: a tiny SKNet trains, writes loadable Hub folders, resumes exactly, and DDP stays in sync."""
import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import timm
from timm.data import create_transform, resolve_data_config
from timm.layers import convert_sync_batchnorm
from timm.layers.norm_act import BatchNormAct2d, SyncBatchNormAct

from timm_sknet import SelectiveKernelAttn
from timm_sknet.synthetic_data import SyntheticShapes, write_image_folder
from timm_sknet.train import add_train_arguments, main, parse_model_kwargs, run_train, state_digest

ROOT = Path(__file__).resolve().parents[1]
TINY = ['--model', 'sknet18', '--model-kwargs', 'layers=(1,1,1,1)', 'num_classes=4', '--image-size', '16',
        '--batch-size', '16', '--workers', '0', '--lr', '0.02', '--seed', '3', '--device', 'cpu']


def _args(*argv) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv])


def _digest(folder: Path, rank: int = 0) -> str:
    return (folder / f'rank{rank}.sha256').read_text().strip()


@pytest.fixture(scope='module')
def two_epochs(tmp_path_factory):
    """An uninterrupted 2-epoch run with EMA; its digest is the in-memory state at the end."""
    out = tmp_path_factory.mktemp('run')
    metrics = run_train(_args(*TINY, '--synthetic', 32, '--epochs', 2, '--model-ema', '--model-ema-decay', 0.5,
                              '--output', out, '--write-state-digest', out / 'digest'))
    return out, metrics


def test_two_epochs_run_finite_and_log_each_epoch(two_epochs):
    out, metrics = two_epochs
    log = [json.loads(line) for line in (out / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2] and metrics == log[-1]
    for r in log:
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ('train_loss', 'val_loss', 'val_top1'))
        assert 0 <= r['val_top1'] <= 100
    assert log[1]['lr'] < log[0]['lr']  # cosine, stepped per epoch
    assert sorted(p.name for p in (out / 'last').iterdir()) == [
        'README.md', 'config.json', 'model.safetensors', 'train_state.pt']
    assert not [p for p in out.iterdir() if p.name.startswith('.')]  # no staging folder left


def test_last_loads_via_local_dir_with_the_trained_weights(two_epochs):
    """local-dir: gives back exactly the in-memory weights, and its recorded preprocessing reproduces val top-1."""
    out, metrics = two_epochs
    model = timm.create_model(f'local-dir:{out / "last"}', pretrained=True).eval()
    assert model.num_classes == 4 and len(model.layer1) == 1
    assert state_digest(model.state_dict()) == _digest(out / 'digest')
    config = resolve_data_config({}, model=model)
    assert config['input_size'] == (3, 16, 16)
    val = SyntheticShapes(8, 16, seed=3, split='validation', num_classes=4, transform=create_transform(**config))
    x = torch.stack([val[i][0] for i in range(len(val))])
    y = torch.tensor(val.targets)
    with torch.no_grad():
        logits = model(x)
    assert torch.isfinite(logits).all()
    top1 = 100.0 * (logits.argmax(1) == y).float().mean().item()
    assert top1 == pytest.approx(metrics['val_top1'])
    card = (out / 'last' / 'README.md').read_text()
    assert 'library_name: timm' in card and 'ra_in1k' not in (out / 'last' / 'config.json').read_text()


def test_ema_folder_holds_different_weights(two_epochs):
    out, _ = two_epochs
    last = load_file(str(out / 'last' / 'model.safetensors'))
    ema = load_file(str(out / 'ema' / 'model.safetensors'))
    assert last.keys() == ema.keys()
    assert any(not torch.equal(last[k], ema[k]) for k in last if last[k].is_floating_point())
    loaded = timm.create_model(f'local-dir:{out / "ema"}', pretrained=True)
    assert state_digest(loaded.state_dict()) == state_digest(ema)


def test_resume_continues_exactly(two_epochs, tmp_path):
    """1 epoch, stop, resume for the 2nd: the same weights (and EMA) as the uninterrupted 2-epoch run."""
    ref, ref_metrics = two_epochs
    common = [*TINY, '--synthetic', 32, '--epochs', 2, '--model-ema', '--model-ema-decay', 0.5, '--output', tmp_path]
    first = run_train(_args(*common, '--epochs-per-run', 1))
    assert first['epoch'] == 1 and torch.load(tmp_path / 'last' / 'train_state.pt', weights_only=False)['epoch'] == 0
    second = run_train(_args(*common, '--resume', tmp_path / 'last', '--write-state-digest', tmp_path / 'digest'))
    assert second['epoch'] == 2
    assert _digest(tmp_path / 'digest') == _digest(ref / 'digest')
    for sub in ('last', 'ema'):
        a = load_file(str(tmp_path / sub / 'model.safetensors'))
        b = load_file(str(ref / sub / 'model.safetensors'))
        assert all(torch.equal(a[k], b[k]) for k in b)
    for k in ('train_loss', 'val_loss', 'val_top1', 'lr'):
        assert second[k] == ref_metrics[k]


def test_image_folder_with_amp_grad_checkpointing_adamw_step(tmp_path):
    data = write_image_folder(tmp_path / 'data', {'train': 16, 'validation': 8}, image_size=16, num_classes=4)
    metrics = run_train(_args(*TINY, '--data-dir', data, '--epochs', 1, '--batch-size', 8, '--amp',
                              '--grad-checkpointing', '--opt', 'adamw', '--lr', 1e-3, '--sched', 'step',
                              '--output', tmp_path / 'out'))
    assert metrics['epoch'] == 1 and torch.isfinite(torch.tensor(metrics['train_loss']))
    model = timm.create_model(f'local-dir:{tmp_path / "out" / "last"}', pretrained=True)
    assert model.num_classes == 4


def test_bad_input_gives_a_clear_error(tmp_path, capsys):
    (tmp_path / 'data' / 'train').mkdir(parents=True)
    assert main([*TINY, '--data-dir', str(tmp_path / 'data'), '--output', str(tmp_path / 'out')]) == 2
    assert 'validation/' in capsys.readouterr().err
    assert main([*TINY, '--synthetic', '16', '--sync-bn', '--output', str(tmp_path / 'out')]) == 2
    assert 'CUDA' in capsys.readouterr().err
    with pytest.raises(ValueError, match='key=value'):
        parse_model_kwargs(['layers'])
    assert parse_model_kwargs(['layers=(1,2)', 'stem_type=deep']) == {'layers': (1, 2), 'stem_type': 'deep'}
    assert not (tmp_path / 'out' / 'last').exists()


def test_sync_batchnorm_conversion_reaches_every_batchnorm():
    model = timm.create_model('sknet18', layers=(1, 1, 1, 1), num_classes=4)
    n_attn = sum(isinstance(m, SelectiveKernelAttn) for m in model.modules())
    n_act = sum(isinstance(m, BatchNormAct2d) for m in model.modules())
    keys = model.state_dict().keys()
    model = convert_sync_batchnorm(model)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(isinstance(m, torch.nn.SyncBatchNorm) for m in bns)
    attn = [m for m in model.modules() if isinstance(m, SelectiveKernelAttn)]
    assert len(attn) == n_attn == 4 and all(type(m.bn) is torch.nn.SyncBatchNorm for m in attn)
    assert sum(isinstance(m, SyncBatchNormAct) for m in model.modules()) == n_act > 0
    assert model.state_dict().keys() == keys  # checkpoints stay interchangeable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_ends_with_identical_weights(tmp_path):
    """Ranks see different shards; only DDP's gradient all-reduce keeps their weights bit-identical."""
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(_free_port()), '-m', 'timm_sknet.train', *TINY, '--synthetic', '32',
           '--batch-size', '8', '--epochs', '1', '--model-ema', '--output', str(tmp_path / 'out'),
           '--write-state-digest', str(tmp_path / 'digest')]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _digest(tmp_path / 'digest', 0) == _digest(tmp_path / 'digest', 1)
    assert proc.stdout.count('epoch 1/1') == 1  # rank 0 logs
    assert '2 process(es)' in proc.stdout
    loaded = timm.create_model(f'local-dir:{tmp_path / "out" / "last"}', pretrained=True)
    assert state_digest(loaded.state_dict()) == _digest(tmp_path / 'digest', 0)
