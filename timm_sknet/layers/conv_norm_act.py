"""timm's conv-BatchNorm-activation layer, able to fold its BatchNorm away for inference.

:class:`FusableConvNormAct` is timm's ``ConvNormAct`` (same submodules, same state-dict keys, so timm's
checkpoints load unchanged, same ``forward``) plus ``reparameterize()``, which ``timm.utils.reparameterize_model``
calls while it walks the model: the BatchNorm is folded into the convolution in place, and ``bn`` keeps only
what came after the normalisation (drop, activation). :func:`fold_sequential` does the same for the conv-BN pairs
of a plain ``nn.Sequential`` (timm's downsample shortcuts and deep stems), for the module that owns it.
"""
from torch import nn

from timm.layers import ConvNormAct

from .batchnorm_fold import bn_act_parts, fold_batchnorm, is_batchnorm

__all__ = ['FusableConvNormAct', 'fold_sequential']


class FusableConvNormAct(ConvNormAct):
    """timm's ``ConvNormAct`` that folds its BatchNorm for inference (``reparameterize()``)."""

    def reparameterize(self) -> None:
        """Fold ``bn`` into ``conv``; ``bn`` becomes its drop / activation (already folded: nothing to do)."""
        if is_batchnorm(self.bn):
            self.conv = fold_batchnorm(self.conv, self.bn)
            self.bn = bn_act_parts(self.bn)


def fold_sequential(seq: nn.Sequential) -> nn.Sequential:
    """Fold every (conv, BatchNorm) pair of consecutive children of ``seq``; other children are kept.

    Returns a new ``nn.Sequential`` of the same length, a folded BN becoming its drop / activation (or
    ``nn.Identity``) so that indices stay valid.
    """
    out = list(seq)
    for i in range(1, len(out)):
        conv = out[i - 1]
        if is_batchnorm(out[i]) and isinstance(conv, nn.Conv2d):
            out[i - 1], out[i] = fold_batchnorm(conv, out[i]), bn_act_parts(out[i])
    return nn.Sequential(*out)
