"""The authors' Caffe SKNet-50 / SKNet-101 in timm, without Caffe.

- :mod:`.prototxt`: a parser (and writer) of protobuf text format, for ``.prototxt`` files.
- :mod:`.wire`, :mod:`.caffemodel`: a reader of protobuf's binary format and of the few caffe.proto fields
  that carry a ``.caffemodel``'s weights.
- :mod:`.official`: the authors' two networks written down layer by layer; a prototxt is checked against them.
- :mod:`.convert`: blobs to timm tensors by layer name, and the Hub-format folder
  (``timm-sknet convert-caffe PROTOTXT CAFFEMODEL OUT_DIR``).
"""
from .convert import CAFFE_MEAN_BGR, convert_caffe, load_caffe_model
from .errors import CaffeError
from .official import match_official, official_net, render_official_prototxt

__all__ = [
    'CAFFE_MEAN_BGR', 'CaffeError', 'convert_caffe', 'load_caffe_model', 'match_official', 'official_net',
    'render_official_prototxt',
]
