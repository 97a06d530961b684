"""LitServe serving the model ``timm-sknet serve`` serves, as the load benchmark's peer (``bench serve-load``):
the same ``optimize`` result, preprocessing and answer, with LitServe's own batching. Run as
``python -m timm_sknet.bench.litserve_app --model sknet50 --backend openvino --port 8001`` (``pip install litserve``,
the version in benchmarks/requirements.txt)."""
import argparse
from typing import Any, Dict, List

import litserve as ls
import torch
from starlette.requests import Request

import timm
from timm.data import create_transform, resolve_data_config

from ..data.images import read_image
from ..data.labels import class_names
from ..inference import optimize

__all__ = ['Classifier', 'main']


class Classifier(ls.LitAPI):
    """The model as a user of LitServe serves it: decoded and preprocessed per request, run per batch."""

    def __init__(self, model: str, backend: str, img_size: int, threads: int, max_batch: int, max_wait_ms: float):
        super().__init__(max_batch_size=max_batch, batch_timeout=max_wait_ms / 1000)
        self.model_name, self.backend, self.img_size, self.threads = model, backend, img_size, threads

    def setup(self, device: str) -> None:
        torch.set_num_threads(self.threads)
        model = timm.create_model(self.model_name).eval()
        config = resolve_data_config({'img_size': self.img_size}, model=model)
        self.transform, self.labels = create_transform(**config), class_names(model)
        self.model = optimize(model, self.backend, input_size=config['input_size'])

    def decode_request(self, request: Request) -> torch.Tensor:  # the annotation: LitServe passes the parsed form
        return self.transform(read_image(request['file'].file.read()))

    def batch(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x if x.dim() == 4 else x[None]).float().softmax(-1)

    def unbatch(self, output: torch.Tensor) -> List[torch.Tensor]:
        return list(output)

    def encode_response(self, probs: torch.Tensor) -> Dict[str, Any]:
        values, indices = probs.reshape(-1).topk(5)
        return {'predictions': [dict(index=i, label=self.labels[i], probability=p)
                                for p, i in zip(values.tolist(), indices.tolist())]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--model', default='sknet50')
    p.add_argument('--backend', default='auto')
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--max-batch', type=int, default=8)
    p.add_argument('--max-wait-ms', type=float, default=5)
    p.add_argument('--port', type=int, required=True)
    args = p.parse_args()
    api = Classifier(args.model, args.backend, args.img_size, args.threads, args.max_batch, args.max_wait_ms)
    server = ls.LitServer(api, accelerator='cpu', workers_per_device=1, timeout=300)
    server.run(host='127.0.0.1', port=args.port, generate_client_file=False)


if __name__ == '__main__':
    main()
