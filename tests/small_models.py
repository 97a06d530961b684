"""Small SKNet configurations for the fusion and export tests, with non-trivial BatchNorm statistics."""
from helpers import randomize_batchnorm, rel_max_diff
from torch import nn

import timm

RTOL = 1e-4

# small models that between them cover: M = 2 and 3, split input, stride 2 (every stage but the
# first), dilation (output_stride 16 and 8), deep stems, avg-pool downsample, true k x k kernels
CONFIGS = {
    'sknet18': ('sknet18', dict(layers=(1, 1, 1, 1))),
    'sknet50-M3-os16': ('sknet50', dict(layers=(1, 1, 1, 1), kernel_sizes=(3, 5, 7), output_stride=16)),
    'sknet50-deep-avgdown-os8': ('sknet50', dict(layers=(1, 2, 1, 1), stem_type='deep', avg_down=True,
                                                 output_stride=8)),
    'sknet34-tiered-kxk': ('sknet34', dict(layers=(1, 1, 1, 1), stem_type='deep_tiered',
                                          dilated_kernels=False)),
}


def make(name: str) -> nn.Module:
    arch, kwargs = CONFIGS[name]
    return randomize_batchnorm(timm.create_model(arch, num_classes=10, **kwargs)).eval()


rel_err = rel_max_diff
