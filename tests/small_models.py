"""Small SKNet configurations for the fusion and export tests, with non-trivial BatchNorm statistics."""
import timm
import torch
from torch import nn

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


def randomize_bn(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) * 2 - 1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def make(name: str) -> nn.Module:
    arch, kwargs = CONFIGS[name]
    return randomize_bn(timm.create_model(arch, num_classes=10, **kwargs)).eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())
