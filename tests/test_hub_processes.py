"""Loading from the Hub in real processes: four at once download once (huggingface_hub's lock), and a process killed
mid-download leaves nothing a later load would trust. The children are fresh interpreters pointed at tests/local_hub.py by their
environment (HF_ENDPOINT, HF_HUB_CACHE), as a user's processes would be.
"""
import hashlib
import os
import signal
import subprocess
import sys

import pytest
import torch
from hub_fixtures import *  # noqa: F401,F403  (fixtures)
from hub_fixtures import SKNET18_REPO, SMALL, child_env
from safetensors.torch import save as safetensors_bytes

import timm

WEIGHTS = 'model.safetensors'
# Loads sknet18 (one block per stage) with pretrained=True and prints the sha256 of its state dict.
LOAD = f"""
import hashlib, os
from safetensors.torch import save
import timm, timm_sknet
def load():
    model = timm.create_model('sknet18', pretrained=True, layers={SMALL['layers']!r})
    line = 'state-dict-sha256 ' + hashlib.sha256(save(model.state_dict())).hexdigest() + '\\n'
    os.write(1, line.encode())  # one write: the processes finish together on one pipe
"""
# Imports once (5 s of CPU per interpreter on this machine), then forks N processes that load at the same time.
FORK_AND_LOAD = LOAD + """
import os, sys, traceback
pids = []
for _ in range(int(sys.argv[1])):
    pid = os.fork()
    if pid == 0:
        try:
            load()
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    pids.append(pid)
print('exit-codes', *[os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids], flush=True)
"""


def _spawn(hub, cache, tmp_path, script=LOAD + 'load()', *args):
    return subprocess.Popen([sys.executable, '-c', script, *args], env=child_env(hub.endpoint, cache), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _blob_folder_entries(cache):
    return sorted(p.name for p in cache.rglob('blobs/*'))


def test_four_processes_at_once_download_once_and_load_identical_weights(local_hub, hf_cache, tmp_path,
                                                                         sknet18_small):
    local_hub.add_commit(SKNET18_REPO, {WEIGHTS: sknet18_small.data})
    local_hub.hold_heads(4)  # all four know the file before any downloads
    parent = _spawn(local_hub, hf_cache, tmp_path, FORK_AND_LOAD, '4')
    out, err = parent.communicate(timeout=300)
    assert parent.returncode == 0 and 'exit-codes 0 0 0 0' in out, out + err[-3000:]
    printed = [line.split()[1] for line in out.splitlines() if line.startswith('state-dict')]
    assert printed == [hashlib.sha256(safetensors_bytes(sknet18_small.state_dict)).hexdigest()] * 4, out + err[-3000:]
    assert local_hub.count('HEAD', WEIGHTS, server='hub') == 8  # each process: our probe, huggingface_hub's HEAD
    assert local_hub.count('GET', WEIGHTS, server='cdn') == 1
    assert _blob_folder_entries(hf_cache) == [hashlib.sha256(sknet18_small.data).hexdigest()]


@pytest.mark.skipif(not hasattr(signal, 'SIGKILL'), reason='needs SIGKILL')
def test_a_load_killed_mid_download_leaves_nothing_trusted_and_the_next_load_verifies(local_hub, hf_cache, tmp_path,
                                                                                       sknet18_small):
    local_hub.add_commit(SKNET18_REPO, {WEIGHTS: sknet18_small.data})
    local_hub.fault = 'stall'  # half the body, then nothing: the child is mid-download when it is killed
    child = _spawn(local_hub, hf_cache, tmp_path)
    try:
        assert local_hub.stalled.wait(timeout=120), child.communicate(timeout=30)
        digest = hashlib.sha256(sknet18_small.data).hexdigest()
        partial = _blob_folder_entries(hf_cache)
        assert partial and digest not in partial, 'the child writes into a temporary file, never under the blob name'
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL

    local_hub.fault = None
    local_hub.reset_counts()
    model = timm.create_model('sknet18', pretrained=True, **SMALL)
    for k, v in sknet18_small.state_dict.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert local_hub.count('GET', WEIGHTS, server='cdn') == 1
    # the blob, verified; the dead child's partial file stays a temporary file, which no load ever reads
    assert _blob_folder_entries(hf_cache) == sorted([digest, *partial])
