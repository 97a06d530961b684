"""Small utilities shared by the tests (no test logic here)."""
import contextlib
import socket
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

# (our model, the timm model whose weights it must load unchanged)
TIMM_TWINS = [('sknet18', 'skresnet18'), ('sknet34', 'skresnet34'), ('sknet50', 'skresnext50_32x4d')]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine params and running stats, so a wrong mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                # gain < 1 on average, so deep random networks stay in a well-conditioned range
                m.weight.copy_(torch.rand(n, generator=g) * 0.8 + 0.6)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
    return model


def save_safetensors(model: nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def rel_max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: scale-free, so it works for logits of any magnitude."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def naive_selective_kernel(
        unit, x: torch.Tensor, kernel_sizes, stride: int = 1, groups: int = 1, dilation: int = 1,
        dilated_kernels: bool = True, split_input: bool = False, training: bool = False) -> torch.Tensor:
    """The SK unit computed straight from the paper's equations (Li et al. 2019, Eqs. 1-6).

    Only the learned tensors come from ``unit``. The geometry comes from the arguments and the paper:
    a k x k kernel (k > 3) is a 3x3 conv with dilation (k - 1) / 2 when ``dilated_kernels``, with
    "same" padding; ``dilation`` is the unit-level dilation (timm's output_stride), multiplying it.
    """
    F = torch.nn.functional
    m = len(kernel_sizes)
    inputs = list(x.chunk(m, dim=1)) if split_input else [x] * m
    feats = []
    for k, path, inp in zip(kernel_sizes, unit.paths, inputs):
        bn = path.bn
        if dilated_kernels and k > 3:
            kk, dil = 3, dilation * (k - 1) // 2
        else:
            kk, dil = k, dilation
        weight = path.conv.weight
        assert weight.shape[-2:] == (kk, kk), f'path for k={k} has kernel {tuple(weight.shape[-2:])}'
        u = F.conv2d(inp, weight, None, stride, dil * (kk - 1) // 2, dil, groups)
        u = F.batch_norm(u, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=training, eps=bn.eps)
        feats.append(F.relu(u))
    u_sum = sum(feats)                                   # Eq. 1: U = sum of the paths
    s = u_sum.mean(dim=(2, 3))                           # Eq. 2: global average pooling
    attn = unit.attn
    z = s @ attn.fc_reduce.weight.flatten(1).t()         # Eq. 3: z = ReLU(BN(W s))
    z = F.batch_norm(z, attn.bn.running_mean, attn.bn.running_var, attn.bn.weight, attn.bn.bias,
                     training=training, eps=attn.bn.eps)
    z = F.relu(z)
    logits = (z @ attn.fc_select.weight.flatten(1).t()).view(x.shape[0], m, -1)  # A z, B z, ...
    a = torch.softmax(logits, dim=1)                     # Eq. 5: softmax across paths, per channel
    return sum(a[:, i, :, None, None] * feats[i] for i in range(m))  # Eq. 6: V = sum_m a_m U_m


@contextlib.contextmanager
def serving(app, start_timeout: float = 30, stop_timeout: float = 15):
    """``app`` under uvicorn in a thread, on 127.0.0.1 at a port the kernel picks; yields its URL, then stops it."""
    import uvicorn
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level='warning', timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={'sockets': [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, 'the server did not start'
        time.sleep(0.02)
    try:
        yield f'http://127.0.0.1:{sock.getsockname()[1]}'
    finally:
        server.should_exit = True
        thread.join(stop_timeout)
        sock.close()
        assert not thread.is_alive(), 'the server did not stop'


def free_port() -> int:
    """A port of 127.0.0.1 that is free now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
