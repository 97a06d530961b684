"""torchvision's Faster R-CNN and RetinaNet on an sknet feature pyramid: a training step and inference, on CPU."""
import math

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models.detection import FasterRCNN, RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

import timm

from timm_sknet import SelectiveKernelAttn
from timm_sknet.detection import FeaturePyramidBackbone, sknet_fpn_backbone

SIZE = 128
SMALL = dict(min_size=SIZE, max_size=SIZE)  # the transform would otherwise resize to 800 px


@pytest.fixture(scope='module')
def pretrained_file(tmp_path_factory):
    """Stand-in for pretrained skresnet18 weights: random convs, BatchNorm with non-trivial statistics."""
    torch.manual_seed(5)
    model = timm.create_model('skresnet18')
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.5 + 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    path = tmp_path_factory.mktemp('weights') / 'skresnet18.safetensors'
    save_file(model.state_dict(), str(path))
    return str(path)


def images_and_targets(n, num_classes=3):
    g = torch.Generator().manual_seed(n)
    images = [torch.rand(3, SIZE, SIZE, generator=g) for _ in range(n)]
    targets = []
    for _ in range(n):
        xy = torch.rand(2, 2, generator=g) * SIZE * 0.5
        wh = torch.rand(2, 2, generator=g) * SIZE * 0.4 + 16
        targets.append(dict(boxes=torch.cat([xy, xy + wh], 1),
                            labels=torch.randint(1, num_classes, (2,), generator=g)))
    return images, targets


def train_step(detector, n):
    detector.train()
    images, targets = images_and_targets(n)
    losses = detector(images, targets)
    total = sum(losses.values())
    total.backward()
    return losses


def assert_backbone_learns(backbone):
    params = dict(backbone.body.named_parameters())
    assert params and all(p.requires_grad for p in params.values())
    for name, p in params.items():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # the SK attention (fuse MLP and selection) gets a signal, not only the convs
    for m in backbone.body.modules():
        if isinstance(m, SelectiveKernelAttn):
            assert m.fc_reduce.weight.grad.abs().sum() > 0 and m.fc_select.weight.grad.abs().sum() > 0


def assert_inference(detector, n=2):
    detector.eval()
    with torch.no_grad():
        out = detector(images_and_targets(n)[0])
    assert len(out) == n
    for det in out:
        assert det['boxes'].shape == (det['scores'].numel(), 4) and det['labels'].shape == det['scores'].shape
        assert torch.isfinite(det['boxes']).all()
        assert ((det['boxes'] >= 0) & (det['boxes'] <= SIZE)).all()


def _one_image_with_one_object(size=64):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, size, size, generator=g) * 0.3
    image[:, 14:44, 20:50] = torch.tensor([0.9, 0.2, 0.2])[:, None, None]
    return image, dict(boxes=torch.tensor([[20., 14., 50., 44.]]), labels=torch.tensor([1]))


@pytest.mark.parametrize('detector', ['fasterrcnn', 'retinanet'])
def test_detector_overfits_one_image(detector):
    """Finite losses prove little: on one image, 12 optimizer steps must bring the loss well down. The backbone
    is the embedded sknet_tiny.synthetic (trained weights, no network), BatchNorm frozen, batch size 1."""
    torch.manual_seed(0)
    image, target = _one_image_with_one_object()
    small = dict(min_size=64, max_size=64)
    if detector == 'fasterrcnn':
        backbone = sknet_fpn_backbone('sknet_tiny', pretrained=True, out_channels=32)
        model = FasterRCNN(backbone, num_classes=2, **small, rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=50,
                           box_batch_size_per_image=32, representation_size=64)
    else:
        backbone = sknet_fpn_backbone('sknet_tiny', pretrained=True, out_indices=(2, 3, 4), out_channels=32,
                                      extra_blocks=LastLevelP6P7(32, 32))
        model = RetinaNet(backbone, num_classes=2, **small, topk_candidates=50)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(12):
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.6 * losses[0], losses


def test_pyramid_levels():
    backbone = sknet_fpn_backbone('sknet18', out_channels=32).eval()
    with torch.no_grad():
        levels = backbone(torch.randn(1, 3, SIZE, SIZE))
    assert list(levels) == ['0', '1', '2', '3', 'pool']
    assert [tuple(v.shape) for v in levels.values()] == [
        (1, 32, SIZE // s, SIZE // s) for s in (4, 8, 16, 32, 64)]


def test_faster_rcnn_trains_at_batch_size_1_with_frozen_batchnorm(pretrained_file):
    backbone = sknet_fpn_backbone(
        'sknet18', pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file), out_channels=64,
        trainable_layers=5)  # pretrained: BatchNorm frozen by default
    detector = FasterRCNN(
        backbone, num_classes=3, **SMALL, rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50, box_batch_size_per_image=64,
        representation_size=128)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
    losses = train_step(detector, n=1)
    assert set(losses) == {'loss_classifier', 'loss_box_reg', 'loss_objectness', 'loss_rpn_box_reg'}
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert_backbone_learns(backbone)
    assert_inference(detector)


def test_retinanet_trains_with_batchnorm_and_grad_checkpointing(pretrained_file):
    backbone = sknet_fpn_backbone(
        'sknet18', pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file), out_indices=(2, 3, 4),
        out_channels=64, extra_blocks=LastLevelP6P7(64, 64), freeze_bn=False, trainable_layers=5)
    backbone.set_grad_checkpointing()
    detector = RetinaNet(backbone, num_classes=3, **SMALL, topk_candidates=100, detections_per_img=20)
    losses = train_step(detector, n=2)
    assert set(losses) == {'classification', 'bbox_regression'}
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert_backbone_learns(backbone)
    assert_inference(detector)
    # training BatchNorm at batch 1 fails with the SK attention's explanation, not torch's bare one
    with pytest.raises(ValueError, match='freeze_batch_norm_2d'):
        train_step(detector, n=1)


def test_freezing_batchnorm_of_a_random_init_warns():
    with pytest.warns(UserWarning, match='freeze_bn=False'):
        sknet_fpn_backbone('sknet18', out_channels=32, freeze_bn=True)


def test_trainable_layers_freezes_the_first_levels():
    for feature_cls in ('getter', 'list'):  # the body's parameter names differ ('model.' prefix)
        backbone = sknet_fpn_backbone('sknet18', out_channels=32, trainable_layers=2, feature_cls=feature_cls)
        names = {n.removeprefix('model.'): p.requires_grad for n, p in backbone.body.named_parameters()}
        trainable = {n.split('.')[0] for n, trains in names.items() if trains}
        frozen = {n.split('.')[0] for n, trains in names.items() if not trains}
        assert trainable == {'layer3', 'layer4'} and frozen == {'conv1', 'bn1', 'layer1', 'layer2'}
    with pytest.raises(ValueError, match='trainable_layers'):
        sknet_fpn_backbone('sknet18', trainable_layers=6)
    with pytest.raises(ValueError, match='has no conv1'):  # not a ResNet: nothing would be frozen silently
        sknet_fpn_backbone('mobilenetv3_small_050', out_channels=32, trainable_layers=4)


def test_body_must_be_a_feature_extractor():
    with pytest.raises(TypeError, match='features_only=True'):
        FeaturePyramidBackbone(torch.nn.Conv2d(3, 8, 3))


@pytest.mark.parametrize('feature_cls', ['getter', 'list'])
def test_pretrained_backbone_trains_the_last_three_levels_by_default(pretrained_file, feature_cls):
    """torchvision's recipe for a pretrained backbone: BatchNorm frozen, stem and stage 1 frozen, stages 2-4
    train (trainable_layers=3). Compared with the rule written out by level, not with our own code."""
    backbone = sknet_fpn_backbone('sknet18', pretrained=True, pretrained_cfg_overlay=dict(file=pretrained_file),
                                  feature_cls=feature_cls)
    trainable = {n.removeprefix('model.').split('.')[0]
                 for n, p in backbone.body.named_parameters() if p.requires_grad}
    frozen = {n.removeprefix('model.').split('.')[0]
              for n, p in backbone.body.named_parameters() if not p.requires_grad}
    assert trainable == {'layer2', 'layer3', 'layer4'}
    assert frozen == {'conv1', 'layer1'}
    assert all(p.requires_grad for p in backbone.fpn.parameters())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules())
