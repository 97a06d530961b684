"""What this machine can run fast: CPU model and instruction-set flags, native bf16 / int8, GPU name.

Machines of the same class differ (one had AVX+FMA only, another AVX-512 with BF16 and VNNI), so the
inference backends and the benchmark ask here instead of assuming. Flags come from ``/proc/cpuinfo``
(Linux) and from what PyTorch's oneDNN reports; both are read once per process.
"""
import functools
import os
import platform
from dataclasses import dataclass, field
from typing import FrozenSet, Optional

import torch

__all__ = ['MachineInfo', 'machine_info', 'native_bf16', 'native_int8', 'resolve_device']

#: flags worth reporting for deep-learning inference, in the order they are printed
_REPORTED_FLAGS = ('avx', 'fma', 'avx2', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx_vnni', 'avx512_bf16',
                   'amx_tile', 'amx_bf16', 'amx_int8', 'asimd', 'sve', 'bf16', 'i8mm')


@dataclass(frozen=True)
class MachineInfo:
    """The CPU (model, cores, flags) and GPU this process runs on."""
    cpu_model: str
    cores: int
    flags: FrozenSet[str] = field(default_factory=frozenset)
    torch_capability: str = ''
    gpu: Optional[str] = None

    @property
    def reported_flags(self) -> str:
        return ' '.join(f for f in _REPORTED_FLAGS if f in self.flags) or 'none of ' + ' '.join(_REPORTED_FLAGS[:4])

    def describe(self) -> str:
        gpu = f'; GPU {self.gpu}' if self.gpu else ''
        return (f'{self.cpu_model}, {self.cores} cores, flags: {self.reported_flags}, '
                f'torch CPU capability {self.torch_capability}{gpu}')


def read_cpuinfo(path: str = '/proc/cpuinfo') -> tuple:
    """(model name, flags) from a Linux cpuinfo file; the platform's names and no flags where there is none."""
    model, flags = '', set[str]()
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip().lower()
                if key == 'model name' and not model:
                    model = value.strip()
                elif key in ('flags', 'features') and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or platform.machine(), frozenset(flags)


@functools.lru_cache(maxsize=None)
def machine_info() -> MachineInfo:
    """This machine, read once."""
    model, flags = read_cpuinfo()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    capability = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, 'cpu') else ''
    return MachineInfo(cpu_model=model, cores=os.cpu_count() or 1, flags=flags, torch_capability=capability,
                       gpu=gpu)


def native_bf16() -> bool:
    """Whether the CPU computes bf16 dot products in hardware (AVX512_BF16, AMX, or Arm BF16).

    Without it, bf16 is emulated through fp32 and runs slower than fp32: backends refuse it and say so.
    """
    flags = machine_info().flags
    return bool(flags & {'avx512_bf16', 'amx_bf16', 'bf16'})


def native_int8() -> bool:
    """Whether the CPU has int8 dot-product instructions (VNNI, AMX-INT8, Arm I8MM / dot product)."""
    flags = machine_info().flags
    return bool(flags & {'avx512_vnni', 'avx_vnni', 'amx_int8', 'i8mm', 'asimddp'})


def resolve_device(device: str = 'auto') -> torch.device:
    """``'auto'`` (the first CUDA GPU where there is one, else the CPU), ``'cpu'``, ``'cuda'`` or ``'cuda:N'`` as a
    ``torch.device``, refused with what to pass instead where this machine has no such device."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if resolved.type not in ('cpu', 'cuda'):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if resolved.type == 'cuda':
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (resolved.index or 0) >= count:
            have = f'{count} CUDA device(s)' if count else 'no CUDA device (torch.cuda.is_available() is False)'
            raise ValueError(f'device {device!r} asked for, but this machine has {have}; use cpu or auto')
    return resolved
