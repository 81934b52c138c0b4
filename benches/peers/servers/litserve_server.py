"""LitServe: one inference worker with batching (max_batch_size 16, batch_timeout 20 ms).

    PEERS_MODEL=malaria PEERS_ORT_THREADS=2 python litserve_server.py --port 8000

POST /predict with a multipart form whose `image` field is the file; the answer is
{"probabilities": [...]} in the model's class order. LitServe decodes each request in the
worker (`decode_request`), stacks the tensors (`batch`), runs `predict` once per batch and
splits the result (`unbatch`).
"""

from __future__ import annotations

import argparse

import litserve as ls
import numpy as np

from common import Screener


class Screening(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.screener = Screener.from_env()

    def decode_request(self, request) -> np.ndarray:
        return self.screener.tensor(request["image"].file.read())

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> list[list[float]]:
        return self.screener.run(x)

    def unbatch(self, output: list[list[float]]) -> list[list[float]]:
        return output

    def encode_response(self, output: list[float]) -> dict[str, list[float]]:
        return {"probabilities": output}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    api = Screening(max_batch_size=16, batch_timeout=0.02)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False, log_level="warning")
