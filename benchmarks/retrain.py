"""Retraining cost: what 1% new images and 1% corrected labels redo, side by side in one run.

Builds a workspace of 10,000 phantom images (``medimg init`` in a temp dir, phantoms from
:mod:`medimg.data.phantoms` in ``data/raw/<class>/`` with ``patients.csv``, as ``medimg demo``
makes them) and trains a champion on it with ``medimg run``. Then, through the CLI in
subprocesses, so every time is what a user waits for:

- (a) retrain against a full run: 1% new phantom files in ``data/raw`` and 1% of the train and
  val images relabelled through the feedback API (``medimg.feedback.review.add_feedback``), then
  ``medimg retrain`` is timed; a second ``medimg retrain`` with nothing new (which should do
  nothing), and ``medimg run --force`` on the same workspace (every stage again; its preprocess
  reads the cache as any run does, a cold one is in (b));
- (b) an incremental preprocess against a full one: another 1% new files, ingested, then the
  preprocess stage timed in this process with ``run_preprocess(..., decoded=...)`` (which hears
  every image id it decodes) and, after another 1%, ``medimg preprocess``; then the same two
  with a cold cache (``data/.preprocess_cache`` deleted). Each is timed ``--repeats`` times (the
  new images' cache entries, or the whole cache, deleted before each) and the median kept. The
  issue's target: at most 5% of the full preprocess;
- (c) a label-only correction: 1% more relabelled, and the preprocess stage decodes no image
  while the packed labels follow the corrections.

Images decoded by a subprocess are counted from the preprocess cache: each decode writes one
entry, so the entries new or rewritten during a command are the images it decoded. Which
stages ran is read from their outputs (rewritten or not) and the command's own summary.
``--keep DIR`` keeps the workspace and the Prefect home, whose database holds each task's
time.

So that the whole run takes about 17 minutes on a 2-core CPU, the benchmark workspace is small
where that does not change the comparison: phantoms of 256x256 (``medimg demo``'s 128 makes a
decode so cheap that the full preprocess is mostly fixed cost; real films are far larger)
preprocessed to 64x64 (``base.image_size``) and one training epoch (``train.epochs``); every
other param is the reference ``params.yaml``. The output names what was chosen. ``medimg
retrain`` is skipped, and said to be, where the installed medimg has no such command.

Usage:
    python benchmarks/retrain.py [--images 10000] [--size 256] [--image-size 64] [--epochs 1]
                                 [--fraction 0.01] [--repeats 3] [--keep DIR]

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

# Ingest pseudonymises patient ids with it; phantom ids name nobody.
PSEUDONYM_KEY = "benchmark-key-0123456789"
REVIEWER = "benchmark-reviewer"
# One output per stage: rewritten when the stage ran, untouched when it was skipped.
STAGE_OUTPUTS = {
    "ingest": "data/manifest.parquet",
    "validate": "reports/validation.json",
    "preprocess": "data/processed/index.json",
    "train": "reports/train_run.json",
    "evaluate": "reports/metrics.json",
    "register": "reports/registration.json",
}
TARGET_RATIO = 0.05  # issue 14: an incremental preprocess at most 5% of a full one


def _cli_env(scratch: Path) -> dict[str, str]:
    """The embedded defaults (no server the user set), a Prefect home of the benchmark's own."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env.update({"MEDIMG_PSEUDONYM_KEY": PSEUDONYM_KEY, "PREFECT_HOME": str(scratch / "prefect"),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1",
                "TF_CPP_MIN_LOG_LEVEL": "2", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"})
    return env


def medimg(env: dict[str, str], *args: str, check: bool = True
           ) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``medimg ARGS`` in its own process; returns its wall time and the finished process."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "medimg", *args], capture_output=True,
                          text=True, env=env)
    seconds = time.perf_counter() - start
    if check and done.returncode != 0:
        raise SystemExit(f"`medimg {' '.join(args)}` failed ({done.returncode}):\n"
                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done


def merge_params(base: dict, overrides: dict) -> dict:
    """``overrides`` over ``base``, section by section (the other benchmarks use it too)."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = (merge_params(out[key], value) if isinstance(value, dict)
                    and isinstance(out.get(key), dict) else value)
    return out


def make_workspace(root: Path, env: dict[str, str], args: argparse.Namespace) -> dict:
    """``medimg init``, the params override, and ``args.images`` phantoms in data/raw."""
    from medimg.data.phantoms import generate_phantoms

    medimg(env, "init", str(root))
    overrides = {"base": {"image_size": args.image_size}, "train": {"epochs": args.epochs}}
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(merge_params(yaml.safe_load(params.read_text()), overrides),
                                     sort_keys=False))
    start = time.perf_counter()
    generate_phantoms(root / "data" / "raw", n_images=args.images, image_size=args.size, seed=0)
    print(f"wrote {args.images} phantoms of {args.size}x{args.size} in "
          f"{time.perf_counter() - start:.0f}s", flush=True)
    return overrides


def add_new_images(root: Path, scratch: Path, n: int, size: int, tag: str, seed: int) -> None:
    """``n`` phantoms of new patients into data/raw, beside the others, named apart."""
    from medimg.data.phantoms import PATIENTS_CSV, generate_phantoms

    made = scratch / f"new-{tag}"
    # patients of one image too, so that a step of a few images can be drawn
    generate_phantoms(made, n_images=n, image_size=size, seed=seed, images_per_patient=(1, 6))
    raw = root / "data" / "raw"
    with (made / PATIENTS_CSV).open(newline="") as source, \
            (raw / PATIENTS_CSV).open("a", newline="") as table:
        writer = csv.writer(table, lineterminator="\n")
        for row in csv.DictReader(source):
            folder, name = row["path"].split("/")
            path = f"{folder}/{tag}_{name}"
            shutil.copyfile(made / row["path"], raw / path)
            writer.writerow((path, f"{tag}-{row['patient_id']}", row["label"]))


def correct_labels(root: Path, n: int, seed: int, exclude: set[str]) -> set[str]:
    """Relabel ``n`` train or val images (not in ``exclude``) to the other class, as a reviewer
    would through the feedback API; returns their ids."""
    from medimg.data.manifest import load_manifest
    from medimg.feedback.review import add_feedback
    from medimg.workspace import open_workspace

    ws = open_workspace(root)
    manifest = load_manifest(ws.manifest_path)
    rows = manifest[manifest["split"].isin(["train", "val"])
                    & ~manifest["image_id"].isin(exclude)].drop_duplicates("image_id")
    chosen = rows.sample(n=n, random_state=seed)
    classes = list(ws.config.base.class_names)
    for image_id, label in zip(chosen["image_id"], chosen["label"], strict=True):
        other = classes[1 - classes.index(label)]
        entry = add_feedback(ws, ws.config, image_id, other, REVIEWER)
        assert entry.status == "applied", (image_id, entry.status)
    return set(chosen["image_id"])


def manifest_ids(root: Path) -> set[str]:
    from medimg.data.manifest import load_manifest

    return set(load_manifest(root / "data" / "manifest.parquet")["image_id"])


def _cache(root: Path):
    from medimg.preprocessing.cache import PreprocessCache
    from medimg.workspace import open_workspace

    ws = open_workspace(root)
    return PreprocessCache.for_config(ws, ws.config)


def _cache_files(root: Path) -> dict[str, int]:
    """Each cached image id and the number of its latest record in the pack: a decode appends a
    record, so an id whose number changed was decoded."""
    return {image_id: row for row, image_id in enumerate(_cache(root).record_ids())}


def _outputs(root: Path) -> dict[str, int | None]:
    return {stage: (root / path).stat().st_mtime_ns if (root / path).exists() else None
            for stage, path in STAGE_OUTPUTS.items()}


class Watch:
    """What one command did to a workspace: the images it decoded (preprocess cache entries
    made or rewritten) and the stages whose output it rewrote."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache, self.outputs = _cache_files(root), _outputs(root)

    def decoded(self) -> set[str]:
        now = _cache_files(self.root)
        return {name for name, stamp in now.items() if self.cache.get(name) != stamp}

    def stages(self) -> list[str]:
        now = _outputs(self.root)
        return [stage for stage in STAGE_OUTPUTS if now[stage] != self.outputs[stage]]


def timed_command(root: Path, env: dict[str, str], label: str, *args: str) -> dict:
    """Run one CLI command on the workspace; its time, what it decoded and rewrote, its say."""
    watch = Watch(root)
    before = manifest_ids(root) if (root / "data" / "manifest.parquet").exists() else set()
    seconds, done = medimg(env, *args, "--workspace", str(root))
    decoded, stages = watch.decoded(), watch.stages()
    new = manifest_ids(root) - before
    said = [line for line in done.stdout.splitlines() if line.strip()][-3:]
    print(f"{label}: {seconds:.1f}s; rewrote {', '.join(stages) or 'nothing'}; decoded "
          f"{len(decoded)} image(s) ({len(decoded & new)} of the {len(new)} new to the "
          f"manifest)", flush=True)
    for line in said:
        print(f"    | {line}", flush=True)
    return {"s": seconds, "decoded": decoded, "new": new, "stages": stages, "said": said}


def preprocess_here(root: Path) -> tuple[float, set[str]]:
    """The preprocess stage in this process; its time and the ids it decoded, as it says."""
    from medimg.preprocessing.stage import run_preprocess
    from medimg.workspace import open_workspace

    ws = open_workspace(root)
    decoded: list[str] = []
    start = time.perf_counter()
    run_preprocess(ws, ws.config, decoded=decoded.append)
    seconds = time.perf_counter() - start
    assert len(decoded) == len(set(decoded)), "an image was decoded twice in one run"
    return seconds, set(decoded)


def forget(root: Path, image_ids: set[str] | None = None) -> None:
    """Delete the preprocess cache's entries of ``image_ids`` (None: the whole cache), so that
    the next preprocess decodes them again, as it did the first time it saw them."""
    if image_ids is None:
        shutil.rmtree(root / "data" / ".preprocess_cache", ignore_errors=True)
        return
    _cache(root).drop(image_ids)


def repeated(label: str, repeats: int, reset, measure) -> tuple[float, set[str]]:
    """``measure()`` (seconds, ids decoded) ``repeats`` times, ``reset()`` before each; the
    median time, and the ids decoded, which must be the same every time."""
    times, seen = [], None
    for i in range(repeats):
        reset()
        seconds, decoded = measure()
        times.append(seconds)
        assert seen is None or decoded == seen, f"{label}: repeat {i} decoded other images"
        seen = decoded
    middle = float(np.median(times))
    print(f"{label}: {middle:.2f}s (median of {', '.join(f'{t:.2f}' for t in times)}), "
          f"decoded {len(seen)}", flush=True)
    return middle, seen


def packed_labels(root: Path) -> dict[str, int]:
    """Image id -> label index, as the packed arrays hold them."""
    processed = root / "data" / "processed"
    index = json.loads((processed / "index.json").read_text())
    labels: dict[str, int] = {}
    for split, ids in index["splits"].items():
        labels.update(zip(ids, np.load(processed / f"{split}_labels.npy").tolist(), strict=True))
    return labels


def code_digest() -> str:
    """medimg's and the flows' source, so a run can tell whether the code moved under it."""
    import flows
    import medimg as package

    digest = hashlib.sha256()
    for folder in (Path(package.__file__).parent, Path(flows.__file__).parent):
        for path in sorted(folder.rglob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def has_retrain(env: dict[str, str]) -> bool:
    _, done = medimg(env, "retrain", "--help", check=False)
    return done.returncode == 0


def _decision(said: list[str]) -> str | None:
    """The retrain's one-line decision, which the summary page's path may follow."""
    return next((line for line in reversed(said) if not line.startswith("summary:")), None)


def step_retrain(root: Path, scratch: Path, env: dict[str, str], n: int, size: int
                 ) -> tuple[dict, set[str]]:
    """(a): 1% new files and 1% corrected labels; retrain, retrain again, run --force."""
    add_new_images(root, scratch, n, size, "new1", seed=1)
    corrected = correct_labels(root, n, seed=1, exclude=set())
    retrain = noop = None
    if has_retrain(env):
        retrain = timed_command(root, env, "medimg retrain", "retrain")
        noop = timed_command(root, env, "medimg retrain, nothing new", "retrain")
    else:
        print("medimg retrain: not in this medimg (no such command); (a) has no retrain time",
              flush=True)
    force = timed_command(root, env, "medimg run --force", "run", "--force")
    figures = {
        "retrain_s": round(retrain["s"], 1) if retrain else None,
        "run_force_s": round(force["s"], 1),
        "retrain_over_run_force": round(retrain["s"] / force["s"], 3) if retrain else None,
        "retrain_decision": _decision(retrain["said"]) if retrain else None,
        "retrain_decoded": len(retrain["decoded"]) if retrain else None,
        "retrain_decoded_only_new": retrain["decoded"] == retrain["new"] if retrain else None,
        "retrain_rewrote": retrain["stages"] if retrain else None,
        "noop_retrain_s": round(noop["s"], 1) if noop else None,
        "noop_retrain_rewrote": noop["stages"] if noop else None,
        "noop_retrain_decoded": len(noop["decoded"]) if noop else None,
        "run_force_decoded": len(force["decoded"]),
        "run_force_rewrote": force["stages"],
    }
    return figures, corrected


def step_preprocess(root: Path, scratch: Path, env: dict[str, str], n: int, size: int,
                    repeats: int) -> dict:
    """(b): 1% new files, ingested; the preprocess stage, then ``medimg preprocess`` after
    another 1%; then both with a cold cache. Each timed ``repeats`` times, the median kept."""
    raw = str(root / "data" / "raw")
    add_new_images(root, scratch, n, size, "new2", seed=2)
    new = timed_command(root, env, f"medimg ingest ({n} new)", "ingest", raw)["new"]
    stage_s, stage_decoded = repeated(f"preprocess stage, {n} new", repeats,
                                      lambda: forget(root, new), lambda: preprocess_here(root))

    add_new_images(root, scratch, n, size, "new3", seed=3)
    new_cli = timed_command(root, env, f"medimg ingest ({n} new)", "ingest", raw)["new"]

    def cli(label: str) -> tuple[float, set[str]]:
        done = timed_command(root, env, label, "preprocess")
        return done["s"], done["decoded"]

    cli_s, cli_decoded = repeated(f"medimg preprocess, {n} new", repeats,
                                  lambda: forget(root, new_cli),
                                  lambda: cli(f"medimg preprocess ({n} new)"))
    full_s, full = repeated("preprocess stage, cold cache", repeats, lambda: forget(root),
                            lambda: preprocess_here(root))
    cli_full_s, cli_full = repeated("medimg preprocess, cold cache", repeats,
                                    lambda: forget(root),
                                    lambda: cli("medimg preprocess, cold"))
    return {
        "preprocess_images": len(full),
        "preprocess_full_s": round(full_s, 2),
        "preprocess_full_decoded": len(full),
        "preprocess_incremental_s": round(stage_s, 2),
        "preprocess_incremental_decoded": len(stage_decoded),
        "preprocess_incremental_only_new": stage_decoded == new,
        "preprocess_incremental_ratio": round(stage_s / full_s, 4),
        "cli_preprocess_full_s": round(cli_full_s, 2),
        "cli_preprocess_full_decoded": len(cli_full),
        "cli_preprocess_incremental_s": round(cli_s, 2),
        "cli_preprocess_incremental_decoded": len(cli_decoded),
        "cli_preprocess_incremental_only_new": cli_decoded == new_cli,
        "cli_preprocess_incremental_ratio": round(cli_s / cli_full_s, 4),
        "target_ratio": TARGET_RATIO,
        "target_met": stage_s / full_s <= TARGET_RATIO,
        "repeats": repeats,
    }


def step_label_only(root: Path, n: int, exclude: set[str]) -> dict:
    """(c): 1% more labels corrected; the preprocess stage decodes nothing, and the packed
    labels of exactly the corrected images change."""
    before = packed_labels(root)
    relabelled = correct_labels(root, n, seed=4, exclude=exclude)
    seconds, decoded = preprocess_here(root)
    after = packed_labels(root)
    moved = {i for i in after if after[i] != before.get(i)}
    print(f"preprocess stage, {n} labels corrected: {seconds:.2f}s, decoded {len(decoded)}; "
          f"packed labels changed for {len(moved)} images (the corrected ones: "
          f"{moved == relabelled})", flush=True)
    return {"label_only_preprocess_s": round(seconds, 2), "label_only_decoded": len(decoded),
            "label_only_packed_labels_changed": len(moved),
            "label_only_changed_only_corrected": moved == relabelled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=256, help="phantom side in pixels")
    parser.add_argument("--image-size", type=int, default=64, help="base.image_size")
    parser.add_argument("--epochs", type=int, default=1, help="train.epochs")
    parser.add_argument("--fraction", type=float, default=0.01,
                        help="share of new images, and of corrected labels, in each step")
    parser.add_argument("--repeats", type=int, default=3,
                        help="times each preprocess is timed (the median is reported)")
    parser.add_argument("--keep", type=Path,
                        help="build the workspace (and its Prefect home) here and keep them")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="medimg-bench-retrain-"))
    home = args.keep or scratch
    root = home / "workspace"
    env = _cli_env(home)
    n = max(2, round(args.images * args.fraction))
    code = code_digest()
    try:
        overrides = make_workspace(root, env, args)
        print(f"workspace {root}: params override {json.dumps(overrides)}; steps of {n} new "
              f"images and {n} corrected labels", flush=True)
        first = timed_command(root, env, "first medimg run (the champion)", "run")
        retrain, corrected = step_retrain(root, scratch, env, n, args.size)
        preprocess = step_preprocess(root, scratch, env, n, args.size, args.repeats)
        label_only = step_label_only(root, n, corrected)
        figures = {
            "images": args.images, "new_images_per_step": n, "corrected_labels_per_step": n,
            "phantom_size": args.size, "image_size": args.image_size, "epochs": args.epochs,
            "cores": os.cpu_count(), "first_run_s": round(first["s"], 1),
            **retrain, **preprocess, **label_only,
            "code": code, "code_changed_during_run": code_digest() != code,
        }
        f = figures
        if f["retrain_s"] is not None:
            print(f"(a) retrain {f['retrain_s']:.1f}s | run --force {f['run_force_s']:.1f}s | "
                  f"x{f['retrain_over_run_force']:.2f}", flush=True)
        else:
            print(f"(a) no medimg retrain to time; run --force {f['run_force_s']:.1f}s",
                  flush=True)
        print(f"(b) preprocess stage: {n} new {f['preprocess_incremental_s']:.2f}s | full "
              f"{f['preprocess_full_s']:.2f}s ({f['preprocess_full_decoded']} decoded) | "
              f"{f['preprocess_incremental_ratio']:.1%} (target at most {TARGET_RATIO:.0%}); "
              f"medimg preprocess {f['cli_preprocess_incremental_s']:.1f}s | "
              f"{f['cli_preprocess_full_s']:.1f}s | {f['cli_preprocess_incremental_ratio']:.1%}",
              flush=True)
        print(f"(c) label-only correction: decoded {f['label_only_decoded']} image(s)",
              flush=True)
        if f["code_changed_during_run"]:
            print("warning: medimg's code changed during the run; stages may have re-run for "
                  "that reason and the cache may have been rebuilt", flush=True)
        print(json.dumps(figures))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
