"""mosec: one worker process with dynamic batching (at most 16 images, 20 ms wait).

    PEERS_MODEL=malaria PEERS_ORT_THREADS=2 python mosec_server.py --address 127.0.0.1 --port 8000

POST /inference with the image file as the raw body; the answer is
{"probabilities": [...]} in the model's class order. mosec's Rust front end collects requests
into batches and hands each batch to `forward` as a list.
"""

from __future__ import annotations

from mosec import Server, Worker

from common import Screener


class Screening(Worker):
    def __init__(self) -> None:
        super().__init__()
        self.screener = Screener.from_env()

    def deserialize(self, data: bytes) -> bytes:
        # The body is the image file itself, not the default JSON.
        return data

    def forward(self, data: list[bytes]) -> list[dict[str, list[float]]]:
        return [{"probabilities": p} for p in self.screener.screen(data)]


if __name__ == "__main__":
    server = Server()
    server.append_worker(Screening, num=1, max_batch_size=16, max_wait_time=20)
    server.run()
