"""timm's train.py / validate.py / benchmark.py / inference.py need no change for sknet models.

The scripts are not in timm's wheel, so the test makes the calls they make, in their order, in a process that
never imports timm_sknet (the installed wheel's autoload registers the models): ``create_model`` with their
arguments and ``--model-kwargs``, ``reparameterize_model`` (``--reparam``), ``resolve_data_config`` from their
argument dict, ``create_dataset`` / ``create_loader`` over an image folder, and a training step. The reference
is the same weights in this process, without folding.
"""
import json
import shutil

import torch
from installed_package import *  # noqa: F401,F403  (fixtures)
from installed_package import run_python

import timm
from timm.data import create_dataset, create_loader, resolve_data_config

from timm_sknet.data.images import SAMPLES_DIR
from timm_sknet.hub.embedded import EMBEDDED_CLASSES, EMBEDDED_TAG

SCRIPT_CALLS = """
import json, torch
from timm import create_model
from timm.data import create_dataset, create_loader, resolve_data_config
from timm.optim import create_optimizer_v2
from timm.utils import reparameterize_model

def batchnorms(model):
    return sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())

# validate.py --model {tag} --pretrained --reparam --data-dir SAMPLES   (inference.py: the same without --reparam)
args = dict(model={tag!r}, pretrained=True, num_classes=None, in_chans=None, global_pool=None, img_size=None,
            input_size=None, crop_pct=None, mean=None, std=None, interpolation='', model_kwargs={{}})
model = create_model(args['model'], pretrained=args['pretrained'], num_classes=args['num_classes'],
                     in_chans=args['in_chans'], global_pool=args['global_pool'], scriptable=False,
                     **args['model_kwargs']).eval()
before = batchnorms(model)
model = reparameterize_model(model)
data_config = resolve_data_config(args, model=model, use_test_size=True)
loader = create_loader(create_dataset('', root={samples!r}), batch_size=4, use_prefetcher=False, num_workers=0,
                       **{{k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct',
                                                      'crop_mode')}})
with torch.no_grad():
    logits = torch.cat([model(x) for x, _ in loader])
torch.save(logits, {out!r})

# benchmark.py --model sknet50 --reparam --img-size 64 -b 2 --bench both --model-kwargs layers=(1,1,1,1)
bench_args = dict(model='sknet50', img_size=64, model_kwargs=dict(layers=(1, 1, 1, 1)))
bench = create_model('sknet50', pretrained=False, in_chans=3, num_classes=None, global_pool=None,
                     scriptable=False, **bench_args['model_kwargs'])
bench_input = resolve_data_config(bench_args, model=bench, use_test_size=False)['input_size']
bench.train()
optimizer = create_optimizer_v2(bench, 'sgd', lr=0.1)   # train.py / benchmark.py --bench train
loss = bench(torch.randn(2, *bench_input)).logsumexp(-1).mean()
loss.backward()
optimizer.step()
infer = reparameterize_model(bench.eval())
with torch.no_grad():
    infer_out = infer(torch.randn(2, *bench_input))
print(json.dumps(dict(batchnorms_before=before, batchnorms_after=batchnorms(model), data_config=data_config,
                      bench_input=list(bench_input), train_loss_finite=bool(torch.isfinite(loss)),
                      infer_shape=list(infer_out.shape), plugin_imported_by='autoload')))
"""


def test_the_calls_of_timms_scripts_work_in_a_process_that_never_imports_the_package(wheel_site, tmp_path):
    # a user's folder, nothing named after us: the synthetic shapes (the folder's photo is not one of its classes)
    images = shutil.copytree(SAMPLES_DIR, tmp_path / 'images', ignore=shutil.ignore_patterns('*.jpg'))
    out = tmp_path / 'logits.pt'
    code = SCRIPT_CALLS.format(tag=EMBEDDED_TAG, samples=str(images), out=str(out))
    assert 'timm_sknet' not in code
    proc = run_python(wheel_site, code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    # --reparam folded the BatchNorms (a bare SKNet keeps only its stem's, see SKNet.reparameterize)
    assert report['batchnorms_after'] <= 1 < report['batchnorms_before']
    assert report['bench_input'] == [3, 64, 64] and report['train_loss_finite']
    assert report['infer_shape'] == [2, 1000]

    # The same weights, data config and loader here, unfolded: the same logits, and the sample images' classes.
    reference = timm.create_model(EMBEDDED_TAG, pretrained=True).eval()
    data_config = resolve_data_config({}, model=reference)
    assert {k: report['data_config'][k] for k in ('input_size', 'crop_pct', 'interpolation')} == {
        'input_size': list(data_config['input_size']), 'crop_pct': data_config['crop_pct'],
        'interpolation': data_config['interpolation']}
    dataset = create_dataset('', root=str(images))
    loader = create_loader(dataset, batch_size=4, use_prefetcher=False, num_workers=0,
                           **{k: data_config[k] for k in ('input_size', 'interpolation', 'mean', 'std', 'crop_pct',
                                                          'crop_mode')})
    with torch.no_grad():
        expected = torch.cat([reference(x) for x, _ in loader])
    logits = torch.load(out)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-4)
    names = [EMBEDDED_CLASSES[i] for i in logits.argmax(-1).tolist()]
    truth = [dataset.filename(i, basename=True).split('_')[1] for i in range(len(dataset))]
    assert names == truth, 'the embedded model classifies every sample image (README: 12/12)'
