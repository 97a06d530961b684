"""Pretrained loading from a Hub on 127.0.0.1: download, cache, offline, faults, integrity, concurrency, pinning.

The weights are random tensors made by the tests and served by tests/local_hub.py; the loaded model is
compared tensor by tensor with what was served, and its outputs with a model given the same tensors by
plain ``load_state_dict``.
"""
import hashlib
import os
import pickle
import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET18_REPO, SMALL, assert_served_weights, load_small_sknet18, point_hub_client_at
from huggingface_hub import constants as hf_constants
from safetensors.torch import save as safetensors_bytes

import timm

import timm_sknet.hub.download as hub_weights
from timm_sknet import WeightsError
from timm_sknet.hub.pins import PINS, Pin

LABEL = 'sknet18.ra_in1k'
WEIGHTS_GET = f'/{SKNET18_REPO}/resolve/main/model.safetensors'


def _serve(hub, weights, repo=SKNET18_REPO, branch='main'):
    return hub.add_commit(repo, {'model.safetensors': weights.data}, branch=branch)


def _reference_logits(weights, x):
    ref = timm.create_model('sknet18', **SMALL).eval()
    ref.load_state_dict(weights.state_dict)
    with torch.no_grad():
        return ref(x)


def _cached_weight_files(cache: Path):
    """Every file of the cached repo but refs and locks: blobs, snapshot links, incomplete downloads."""
    if not cache.exists():
        return []
    return sorted(
        str(p.relative_to(cache)) for p in cache.rglob('*')
        if (p.is_file() or p.is_symlink()) and 'refs' not in p.parts and '.locks' not in p.parts
        and p.name != 'CACHEDIR.TAG')


def test_first_download_loads_the_served_weights(local_hub, hf_cache, sknet18_small):
    _serve(local_hub, sknet18_small)
    model = load_small_sknet18().eval()
    assert_served_weights(model, sknet18_small)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference_logits(sknet18_small, x), rtol=0, atol=0)
    assert local_hub.count('GET', 'model.safetensors') == 1
    # Only safetensors is ever asked for: never a pickle.
    assert not [p for _, p in local_hub.requests if not p.endswith('model.safetensors')]
    # The blob is named after the sha256 the Hub announced, and holds exactly that content.
    digest = hashlib.sha256(sknet18_small.data).hexdigest()
    blob = next(hf_cache.rglob(f'blobs/{digest}'))
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == digest


def test_cached_second_load_makes_no_second_get(local_hub, sknet18_small):
    _serve(local_hub, sknet18_small)
    load_small_sknet18()
    local_hub.reset_counts()
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert local_hub.count('GET') == 0
    assert local_hub.count('HEAD') <= 1


def test_num_classes_and_in_chans_adaptation_still_runs(local_hub, sknet18_small):
    """timm's own adaptation applies to the verified file: conv1 summed over RGB for in_chans=1, head dropped."""
    _serve(local_hub, sknet18_small)
    model = load_small_sknet18(num_classes=10, in_chans=1)
    served = sknet18_small.state_dict
    torch.testing.assert_close(model.conv1.weight, served['conv1.weight'].sum(dim=1, keepdim=True))
    assert model.fc.weight.shape == (10, served['fc.weight'].shape[1])
    assert torch.equal(model.layer4[0].conv1.paths[1].conv.weight, served['layer4.0.conv1.paths.1.conv.weight'])


def test_offline_with_cache_loads_without_any_request(local_hub, monkeypatch, sknet18_small):
    _serve(local_hub, sknet18_small)
    load_small_sknet18()
    local_hub.reset_counts()
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # set after huggingface_hub's import: honoured all the same
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert local_hub.requests == []


def test_offline_without_cache_fails_fast_and_says_what_to_do(local_hub, monkeypatch, sknet18_small):
    _serve(local_hub, sknet18_small)
    monkeypatch.setattr(hf_constants, 'HF_HUB_OFFLINE', True)
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_small_sknet18()
    elapsed = time.perf_counter() - start
    assert elapsed < 5, elapsed
    msg = str(info.value)
    for part in (LABEL, SKNET18_REPO, 'HF_HUB_OFFLINE', 'pretrained_cfg_overlay=dict(file='):
        assert part in msg
    assert local_hub.requests == []


def test_unreachable_hub_without_cache_fails_fast(dead_endpoint):
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_small_sknet18()
    elapsed = time.perf_counter() - start
    assert elapsed < 5, elapsed  # huggingface_hub alone retries for about 23 s
    assert 'could not be reached' in str(info.value) and SKNET18_REPO in str(info.value)


def test_unreachable_hub_with_cache_loads_from_cache(local_hub, monkeypatch, sknet18_small):
    _serve(local_hub, sknet18_small)
    load_small_sknet18()
    local_hub.stop()
    point_hub_client_at(monkeypatch, _closed_port_endpoint())
    start = time.perf_counter()
    assert_served_weights(load_small_sknet18(), sknet18_small)
    assert time.perf_counter() - start < 5


def test_corrupted_cache_entry_is_detected_and_evicted(local_hub, hf_cache, sknet18_small):
    """A blob damaged on disk after a good download (same size) is caught by the next load, not loaded."""
    _serve(local_hub, sknet18_small)
    load_small_sknet18()
    blob = next(hf_cache.rglob('blobs/*'))
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match='integrity check failed'):
        load_small_sknet18()
    assert _cached_weight_files(hf_cache) == []
    assert_served_weights(load_small_sknet18(), sknet18_small)


def test_four_threads_one_download_identical_weights(local_hub, sknet18_small):
    _serve(local_hub, sknet18_small)
    models, errors = [None] * 4, []
    barrier = threading.Barrier(4)

    def work(i):
        try:
            barrier.wait()
            models[i] = load_small_sknet18()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert local_hub.count('GET', 'model.safetensors') == 1
    for model in models:
        assert_served_weights(model, sknet18_small)


@pytest.mark.parametrize('case, what', [
    ('repo', 'repository does not exist'),
    ('revision', "revision 'no-such-branch' does not exist"),
    ('file', 'no such file'),
])
def test_not_found_errors_name_what_is_missing(case, what, local_hub, sknet18_small):
    repo = 'me/other' if case == 'file' else SKNET18_REPO
    files = {'pytorch_model.bin': b'not loaded'} if case == 'file' else {'model.safetensors': sknet18_small.data}
    local_hub.add_commit(repo, files)
    hub_id = {'repo': 'me/missing', 'revision': SKNET18_REPO + '@no-such-branch', 'file': 'me/other'}[case]
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        load_small_sknet18(pretrained_cfg_overlay=dict(hf_hub_id=hub_id))
    assert time.perf_counter() - start < 3
    assert what in str(info.value) and hub_id.split('@')[0] in str(info.value)
    # A pickle is never requested, even where the repo has one.
    assert not [p for _, p in local_hub.requests if p.endswith('.bin')]


def test_pinned_revision_loads_that_commit(local_hub, sknet18_small):
    old = _serve(local_hub, sknet18_small)
    newer_sd = {k: v + 1 if v.is_floating_point() else v for k, v in sknet18_small.state_dict.items()}
    local_hub.add_commit(SKNET18_REPO, {'model.safetensors': safetensors_bytes(newer_sd)})  # main moves on
    model = load_small_sknet18(pretrained_cfg_overlay=dict(hf_hub_id=f'{SKNET18_REPO}@{old}'))
    assert_served_weights(model, sknet18_small)
    assert (f'/{SKNET18_REPO}/resolve/{old}/model.safetensors') in {p for _, p in local_hub.requests}
    assert torch.equal(load_small_sknet18().conv1.weight, newer_sd['conv1.weight'])


def test_a_pin_loads_the_pinned_commit_and_accepts_only_its_sha256(local_hub, hf_cache, monkeypatch, sknet18_small):
    old = _serve(local_hub, sknet18_small)
    newer_sd = {k: v + 1 if v.is_floating_point() else v for k, v in sknet18_small.state_dict.items()}
    local_hub.add_commit(SKNET18_REPO, {'model.safetensors': safetensors_bytes(newer_sd)})  # main moves on
    key = f'{SKNET18_REPO}/model.safetensors'
    digest = hashlib.sha256(sknet18_small.data).hexdigest()
    monkeypatch.setitem(PINS, key, Pin(digest, len(sknet18_small.data), old))
    assert_served_weights(load_small_sknet18(), sknet18_small)  # the pin holds although main moved
    assert f'/{SKNET18_REPO}/resolve/{old}/model.safetensors' in {p for _, p in local_hub.requests}
    # Asking for another revision explicitly bypasses the pin (checked against the Hub's sha256 only).
    newer = load_small_sknet18(pretrained_cfg_overlay=dict(hf_hub_id=f'{SKNET18_REPO}@main'))
    assert torch.equal(newer.conv1.weight, newer_sd['conv1.weight'])

    monkeypatch.setitem(PINS, key, Pin('0' * 64, len(sknet18_small.data), old))
    with pytest.raises(WeightsError, match='pinned in timm_sknet') as info:
        load_small_sknet18()
    assert f'{SKNET18_REPO}@{old}' in str(info.value)
    # The file is what the Hub announced (not corrupt): it stays cached, no pointless re-download.
    assert any(digest in f for f in _cached_weight_files(hf_cache))


def test_without_symlinks_the_verified_file_is_copied_into_the_snapshot(local_hub, hf_cache, monkeypatch,
                                                                       sknet18_small):
    """As huggingface_hub does where symlinks fail (Windows without developer mode)."""
    _serve(local_hub, sknet18_small)

    def no_symlinks(*args, **kwargs):
        raise OSError('symbolic links are not supported here')

    monkeypatch.setattr(os, 'symlink', no_symlinks)
    assert_served_weights(load_small_sknet18(), sknet18_small)
    pointer = next(hf_cache.rglob('snapshots/*/model.safetensors'))
    assert not pointer.is_symlink() and pointer.read_bytes() == sknet18_small.data


def test_cache_dir_argument_is_honoured(local_hub, hf_cache, tmp_path, sknet18_small):
    _serve(local_hub, sknet18_small)
    other = tmp_path / 'elsewhere'
    assert_served_weights(load_small_sknet18(cache_dir=other), sknet18_small)
    assert _cached_weight_files(other) and not _cached_weight_files(hf_cache)


def test_user_checkpoint_loads_with_weights_only(tmp_path, sknet18_small):
    path = tmp_path / 'mine.pth'
    torch.save({'state_dict': sknet18_small.state_dict, 'epoch': 3}, path)
    assert_served_weights(load_small_sknet18(pretrained_cfg_overlay=dict(file=str(path))), sknet18_small)


class _Payload:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return {}


def test_user_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / 'evil.bin'
    with open(path, 'wb') as f:
        pickle.dump(_Payload(), f, protocol=2)
    _Payload.ran = False
    with pytest.raises(RuntimeError, match='weights_only=True blocked'):
        load_small_sknet18(pretrained_cfg_overlay=dict(file=str(path)))
    assert not _Payload.ran


def test_missing_user_file_says_so(tmp_path):
    with pytest.raises(WeightsError, match='does not exist'):
        load_small_sknet18(pretrained_cfg_overlay=dict(file=str(tmp_path / 'nope.safetensors')))


def test_model_without_weights_lists_the_tags_that_exist():
    with pytest.raises(WeightsError) as info:
        timm.create_model('sknet101', pretrained=True)
    msg = str(info.value)
    assert 'No pretrained weights exist for sknet101' in msg
    for tag in ('sknet18.ra_in1k', 'sknet34.ra_in1k', 'sknet50.ra_in1k'):
        assert tag in msg


def test_only_safetensors_is_fetched(local_hub):
    with pytest.raises(WeightsError, match='only downloads safetensors'):
        hub_weights.fetch_verified_weights('me/repo', 'pytorch_model.bin')
    assert local_hub.requests == []


# ---- helpers -------------------------------------------------------------------------------------------
def _closed_port_endpoint() -> str:
    """An endpoint on loopback where nothing listens."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return f'http://127.0.0.1:{s.getsockname()[1]}'
