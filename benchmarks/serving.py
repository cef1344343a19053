"""Review service speed: ``/predict`` latency from a second process, and batch ``medimg predict``
against a loop of single predictions, side by side in one run.

A workspace is made with ``medimg init`` in a temp dir, and the seed CNN at 224x224 (the design's
input, ``model.architecture: seed_cnn``, untrained: weights do not change the time) is saved as a
bundle. Then:

- latency: ``medimg serve --model BUNDLE`` runs in its own process on a loopback port, and this
  process posts a 512x512 PNG to ``/predict`` ``--requests`` times (after ``--warmup``), one at a
  time, as a reviewer's page does; p50 and p95 in milliseconds. Target: p95 under 100 ms;
- throughput: ``--images`` different 512x512 PNG files predicted by ``medimg predict``'s own
  function (:func:`medimg.review.batch.predict_files`) with ``serve.batch_size`` images per
  forward pass, against the same function given one image at a time (the loop a script calling
  a single-image API makes): images per second, and the ratio. Target: at least 5x. The batch
  command's wall time from the shell (``medimg predict FOLDER``, start-up included) is printed
  beside them.

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


def latency(ws_root: Path, bundle: Path, token: str, requests: int, warmup: int) -> dict:
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medimg",
            "serve",
            "--model",
            str(bundle),
            "--port",
            str(port),
            "--workspace",
            str(ws_root),
        ],
        cwd=ws_root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if json.loads(r.read())["status"] == "ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"medimg serve did not start: {server.stderr.read()[-2000:]}")
            time.sleep(0.5)
        body, kind = multipart(film(0))
        times = []
        for i in range(warmup + requests):
            request = urllib.request.Request(
                f"{url}/predict",
                data=body,
                method="POST",
                headers={"Content-Type": kind, "Authorization": f"Bearer {token}"},
            )
            start = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as r:
                answer = json.loads(r.read())
            elapsed = time.perf_counter() - start
            assert answer["model_version"] == "local", answer
            if i >= warmup:
                times.append(elapsed * 1000)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "requests": requests,
        "p50_ms": float(np.percentile(times, 50)),
        "p95_ms": float(np.percentile(times, 95)),
        "mean_ms": float(np.mean(times)),
    }


def throughput(ws_root: Path, bundle: Path, folder: Path, batch_size: int) -> dict:
    from medimg.review.batch import image_files, predict_files
    from medimg.review.live_model import LiveModel
    from medimg.workspace import open_workspace

    ws = open_workspace(ws_root)
    served = LiveModel(ws, ws.config, model_uri=str(bundle)).current()
    files = image_files([folder])
    predict_files(ws, served, files[:batch_size], batch_size)  # warm-up: graph tracing
    predict_files(ws, served, files[:2], 1)
    start = time.perf_counter()
    batched = predict_files(ws, served, files, batch_size)
    batch_s = time.perf_counter() - start
    start = time.perf_counter()
    single = predict_files(ws, served, files, 1)
    loop_s = time.perf_counter() - start
    assert batched.predicted == single.predicted == len(files)
    same = all(a["label"] == b["label"] for a, b in zip(batched.rows, single.rows, strict=True))
    return {
        "images": len(files),
        "batch_size": batch_size,
        "batch_images_per_s": len(files) / batch_s,
        "loop_images_per_s": len(files) / loop_s,
        "batch_over_loop": loop_s / batch_s,
        "same_labels": same,
    }


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

        figures = {"latency": latency(ws_root, bundle, token, args.requests, args.warmup)}
        lat = figures["latency"]
        print(
            f"/predict, 512x512 PNG, seed CNN at 224, {lat['requests']} requests: p50 "
            f"{lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms (target p95 < 100 ms)"
        )
        figures["throughput"] = throughput(ws_root, bundle, folder, ws.config.serve.batch_size)
        t = figures["throughput"]
        print(
            f"{t['images']} images: batch of {t['batch_size']} {t['batch_images_per_s']:.1f} "
            f"img/s, loop of single predictions {t['loop_images_per_s']:.1f} img/s: "
            f"{t['batch_over_loop']:.2f}x (target >= 5x); same labels: {t['same_labels']}"
        )
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
