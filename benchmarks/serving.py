"""Review service speed: ``/predict`` latency from a second process, and batch ``medimg predict``
against a loop of single predictions, side by side in one run.

A workspace is made with ``medimg init`` in a temp dir, and the seed CNN at 224x224 (the design's
input, ``model.architecture: seed_cnn``, untrained: weights do not change the time) is saved as a
bundle. Then:

- latency: ``medimg serve --model BUNDLE`` runs in its own process on a loopback port, and this
  process posts a 512x512 PNG to ``/predict`` ``--requests`` times (after ``--warmup``), one at a
  time, as a reviewer's page does; p50 and p95 in milliseconds. Target: p95 under 100 ms;
- throughput: ``--images`` different 512x512 PNG files predicted by ``medimg predict``'s own
  function (:func:`medimg.review.batch.predict_files`: ``serve.batch_size`` images per forward
  pass, files taken in on a thread per core a batch ahead) against two loops of single
  predictions: the service's single prediction, one ``POST /predict`` per file to the server
  above (what a script without the batch command does; the target, at least 5x, is judged on
  it), and the same function given one image at a time on one thread (what batching alone
  buys, with the HTTP hop and the worklist record taken out). Images per second and the
  ratios. The batch command's wall time from the shell (``medimg predict FOLDER``, start-up
  included) is printed beside them.

Usage:
    python benchmarks/serving.py [--requests 200] [--warmup 20] [--images 256]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIZE = 512


def film(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = 120 + 60 * np.sin(xx / (17 + seed % 7)) * np.cos(yy / 23)
    pixels = np.clip(base + rng.normal(0, 12, (SIZE, SIZE)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def make_bundle(ws_root: Path, out: Path) -> None:
    from medimg.bundle import BundleMeta, ModelBundle
    from medimg.training.models import build_model
    from medimg.workspace import open_workspace

    config = open_workspace(ws_root).config
    model = build_model(
        224, config.base.channels, 2, config.model.model_copy(update={"architecture": "seed_cnn"})
    )
    meta = BundleMeta(
        class_names=list(config.base.class_names),
        image_size=224,
        channels=config.base.channels,
        preprocess=config.preprocess.model_dump(mode="json"),
        threshold=0.5,
        max_pixels=config.data.max_pixels,
        dicom_frame=config.data.dicom_frame,
    )
    ModelBundle(model, meta).save(out)


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "benchboundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="film.png"\r\nContent-Type: image/png\r\n\r\n'
    ).encode()
    return body + data + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


class Server:
    """``medimg serve --model BUNDLE`` in its own process on a loopback port."""

    def __init__(self, ws_root: Path, bundle: Path, token: str) -> None:
        self.port = 18000 + os.getpid() % 1000
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        env = {**os.environ,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "medimg", "serve", "--model", str(bundle), "--port",
             str(self.port), "--workspace", str(ws_root)],
            cwd=ws_root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if json.loads(r.read())["status"] == "ok":
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("medimg serve did not start: "
                                 f"{self.process.stderr.read()[-2000:]!r}")
            time.sleep(0.5)

    def predict(self, data: bytes) -> dict:
        body, kind = multipart(data)
        request = urllib.request.Request(f"{self.url}/predict", data=body, method="POST",
                                         headers={"Content-Type": kind,
                                                  "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def latency(server: Server, requests: int, warmup: int) -> dict:
    data = film(0)
    times = []
    for i in range(warmup + requests):
        start = time.perf_counter()
        answer = server.predict(data)
        elapsed = time.perf_counter() - start
        assert answer["model_version"] == "local", answer
        if i >= warmup:
            times.append(elapsed * 1000)
    return {"requests": requests, "p50_ms": float(np.percentile(times, 50)),
            "p95_ms": float(np.percentile(times, 95)), "mean_ms": float(np.mean(times))}


def request_loop(server: Server, folder: Path) -> dict:
    files = sorted(folder.iterdir())
    start = time.perf_counter()
    labels = [server.predict(path.read_bytes())["label"] for path in files]
    elapsed = time.perf_counter() - start
    return {"images": len(files), "images_per_s": len(files) / elapsed, "labels": labels}


def throughput(ws_root: Path, bundle: Path, folder: Path, batch_size: int) -> dict:
    from medimg.review.batch import image_files, predict_files
    from medimg.review.live_model import LiveModel
    from medimg.workspace import open_workspace

    ws = open_workspace(ws_root)
    served = LiveModel(ws, ws.config, model_uri=str(bundle)).current()
    files = image_files([folder])
    predict_files(ws, served, files[:batch_size], batch_size)  # warm-up: graph tracing
    predict_files(ws, served, files[:2], 1, workers=1)
    start = time.perf_counter()
    batched = predict_files(ws, served, files, batch_size)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    single = predict_files(ws, served, files, 1, workers=1)
    loop_s = time.perf_counter() - start
    assert batched.predicted == single.predicted == len(files)
    same = all(a["label"] == b["label"] for a, b in zip(batched.rows, single.rows, strict=True))
    return {"images": len(files), "batch_size": batch_size,
            "batch_images_per_s": len(files) / batch_s,
            "function_loop_images_per_s": len(files) / loop_s,
            "batch_over_function_loop": loop_s / batch_s, "same_labels": same,
            "labels": [row["label"] for row in batched.rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medimg-bench-serving-") as tmp:
        ws_root = Path(tmp) / "ws"
        subprocess.run(
            [sys.executable, "-m", "medimg", "init", str(ws_root)], check=True, capture_output=True
        )
        from medimg.review.auth import add_user, users_path
        from medimg.workspace import open_workspace

        ws = open_workspace(ws_root)
        token = add_user(users_path(ws), "bench")
        bundle = Path(tmp) / "bundle"
        make_bundle(ws_root, bundle)
        folder = Path(tmp) / "films"
        folder.mkdir()
        for i in range(args.images):
            (folder / f"{i:04d}.png").write_bytes(film(i + 1))

        server = Server(ws_root, bundle, token)
        try:
            figures = {"latency": latency(server, args.requests, args.warmup)}
            loop = request_loop(server, folder)
        finally:
            server.close()
        lat = figures["latency"]
        print(f"/predict, 512x512 PNG, seed CNN at 224, {lat['requests']} requests: p50 "
              f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms (target p95 < 100 ms)")
        t = throughput(ws_root, bundle, folder, ws.config.serve.batch_size)
        t["request_loop_images_per_s"] = loop["images_per_s"]
        t["batch_over_request_loop"] = t["batch_images_per_s"] / loop["images_per_s"]
        t["same_labels"] = t["same_labels"] and t.pop("labels") == loop["labels"]
        figures["throughput"] = t
        print(f"{t['images']} images: batch of {t['batch_size']} {t['batch_images_per_s']:.1f} "
              f"img/s; a loop of POST /predict {t['request_loop_images_per_s']:.1f} img/s: "
              f"{t['batch_over_request_loop']:.2f}x (target >= 5x); the function one image at "
              f"a time {t['function_loop_images_per_s']:.1f} img/s: "
              f"{t['batch_over_function_loop']:.2f}x; same labels: {t['same_labels']}")
        start = time.perf_counter()
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "medimg",
                "predict",
                str(folder),
                "--model",
                str(bundle),
                "--out",
                str(Path(tmp) / "preds.csv"),
                "--workspace",
                str(ws_root),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        figures["cli_batch_s"] = time.perf_counter() - start
        print(
            f"`medimg predict` on the {t['images']} files, start-up included: "
            f"{figures['cli_batch_s']:.1f} s"
        )
        figures["cpu_count"] = os.cpu_count()
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
