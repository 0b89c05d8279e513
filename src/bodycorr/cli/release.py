"""Ship a trained model: copy its weights into the package and write the model card from the run's records."""

from __future__ import annotations

import json
import platform
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from bodycorr.common.errors import BodycorrError, check_readable
from bodycorr.common.fileio import check_output_dir, file_sha256, write_text_atomic

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


def _hardware() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU"


def _note(note: str) -> str:
    return f"\n{note.strip()}\n" if note.strip() else ""


def _bench_note(res: dict) -> str:
    meta = res.get("meta", {})
    parts = []
    if "suite_parameters_sha256" in meta:
        parts.append(f"Suite parameters: sha256 {meta['suite_parameters_sha256']}... (`src/bodycorr/data/suites/`).")
    if "geodesic" in meta:
        parts.append(f"Geodesics: {meta['geodesic']}.")
    secs = meta.get("seconds", {}).get("total")
    if secs:
        parts.append(f"The whole run took {secs / 60:.1f} min ({meta.get('describe_workers', 1)} describe workers).")
    return " ".join(parts)


def _lineage(run: Path, cfg: dict) -> list[tuple[Path, dict, list]]:
    """The runs that made ``run``'s weights, first to last: a run whose config has ``init`` started
    from another run's ``last.pt``; each entry is (folder, config, log records)."""
    chain: list[tuple[Path, dict, list]] = []
    while True:
        log = [json.loads(x) for x in check_readable(run / "log.jsonl", "run log").read_text().splitlines() if x.strip()]
        if not log:
            raise BodycorrError(f"run {run}: log.jsonl is empty; nothing was trained.")
        chain.insert(0, (run, cfg, log))
        if not cfg.get("init"):
            return chain
        run = Path(cfg["init"]).parent
        cfg = json.loads(check_readable(run / "config.json", "config of the run the weights started from").read_text())
        if len(chain) > 20:
            raise BodycorrError(f"run {run}: the init chain is longer than 20 runs (a loop?).")


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_name(name: str) -> str:
    """``name`` if it is a plain file name for the shipped files (``<name>.pt``, ``<name>.md`` in the
    package's weights folder): letters, digits, ``.``, ``_``, ``-``; no ``/``, no ``..``, no leading dot."""
    if not (_PLAIN_NAME.fullmatch(name or "") and ".." not in name and len(name) <= 64):
        raise BodycorrError(f"release --name {name!r}: give a plain file name (letters, digits, '.', '_', '-'; no '/', no '..', "
                            "not starting with a dot; at most 64 characters), e.g. depth-unet.")  # fmt: skip
    return name


def _read_results(results: str | Path) -> dict:
    p = check_readable(results, "benchmark results")
    try:
        res = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BodycorrError(f"benchmark results {p}: not valid JSON ({str(e).splitlines()[0][:80]}). Give the results.json a benchmark wrote.") from None
    if not isinstance(res, dict):
        raise BodycorrError(f"benchmark results {p}: not a benchmark's results.json. Give the results.json a benchmark wrote.")
    return res


def _measured_model(res: dict, results: str | Path, model: Path, digest: str) -> None:
    """One line unless the depth results' figures (the first method's) were measured on ``model``."""
    order = res.get("method_order") or []
    rec = ((res.get("meta") or {}).get("models") or {}).get(order[0] if order else None)
    if not rec or not rec.get("sha256"):
        raise BodycorrError(f"benchmark results {results}: they do not record which model file was measured (an older bodycorr, or "
                            f"a baseline listed first), so they cannot be checked against {model}. Rerun "
                            f"'bodycorr benchmark --model {model} -o DIR' and pass DIR/results.json.")  # fmt: skip
    if rec["sha256"] != digest:
        raise BodycorrError(f"benchmark results {results}: measured on model file {rec.get('file')} (sha256 {rec['sha256'][:12]}...), "
                            f"not on {model} (sha256 {digest[:12]}...). Benchmark this run's model: "
                            f"'bodycorr benchmark --model {model} -o DIR', and pass DIR/results.json.")  # fmt: skip


def release(run: str | Path, results: str | Path, name: str = "depth-unet", command: str = "", note: str = "") -> Path:
    """Copy ``run/model.pt`` to ``bodycorr/weights/<name>.pt`` and write ``<name>.md`` (the card).

    ``name`` must be a plain file name (:func:`check_name`), and ``results`` must have been measured
    on this very model file: its sha256, which ``bodycorr benchmark`` and ``benchmark-image`` record,
    must match the file's.
    """
    check_name(name)
    check_output_dir(WEIGHTS, "the package's weights folder")  # an installed, read-only package fails here, before the work
    run = Path(run)
    model = check_readable(run / "model.pt", "model file")
    cfg = json.loads(check_readable(run / "config.json", "run config").read_text())
    res = _read_results(results)
    digest = file_sha256(model)
    if cfg.get("task") == "surface":
        return release_surface(run, model, cfg, res, name, command, note, results=results, digest=digest)
    _measured_model(res, results, model, digest)
    chain = _lineage(run, cfg)
    log = chain[-1][2]
    size_mb = model.stat().st_size / 2**20
    if size_mb > 20:
        raise BodycorrError(f"model file {model}: {size_mb:.1f} MB, over the 20 MB limit for a shipped model.")
    # time spent training, from the logs' throughput (resumes and pauses excluded; validation not counted)
    wall = sum(sum(c.get("log_every", 25) * c["batch_size"] / r["img_per_s"] for r in lg if r.get("img_per_s")) for _, c, lg in chain)
    steps = sum(lg[-1]["step"] for _, _, lg in chain)
    views = sum(lg[-1]["step"] * c["batch_size"] for _, c, lg in chain)
    vals = [r for r in log if "val_mean_cm" in r]
    if not command:
        command = " && ".join(f"bodycorr train --config {c['name']} --out {r}" for r, c, _ in chain)
    stages = "; ".join(f"{lg[-1]['step']} of `{c['name']}`" + (f" (from `{c['init']}`)" if c.get("init") else "") for _, c, lg in chain)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, WEIGHTS / f"{name}.pt")
    rows = []
    for key, g in res["groups"].items():
        aea = f"{g['AE_area_cm']:.2f}" if "AE_area_cm" in g else "-"
        rows.append(f"| {key} | {g['AE_cm']:.2f} | {g['WE_cm']:.2f} | {aea} | {g['median_cm']:.2f} | {g['within_5cm_pct']:.1f} | "
                    f"{g['within_10cm_pct']:.1f} | {g['gross_pct']:.1f} | {g['flip_share_of_gross_pct']:.0f} |")  # fmt: skip
    card = f"""# Model card: `{name}`

Dense depth descriptors (Wei et al. 2016 style), {cfg['model']} backbone, {steps} training steps.

| | |
| --- | --- |
| file | `src/bodycorr/weights/{name}.pt` ({size_mb:.1f} MB, float16 weights, training heads dropped) |
| command | `{command}` |
| config | {", ".join(f"`configs/{c['name']}.json`" for _, c, _ in chain)} (the last copied below) |
| seed | {", ".join(str(c['seed']) for _, c, _ in chain)} |
| data | synthetic Anny people rendered on the fly: train identities only (test identities of synthetic-v1 never seen), {cfg['view']['size']}x{cfg['view']['size']} crops, noise '{cfg['view']['noise']}' |
| steps | {steps} at batch {cfg['batch_size']} ({views} views): {stages} |
| wall time | {wall / 3600:.2f} h of training steps (from the log's throughput; validation excluded) |
| hardware | {_hardware()} |
| made | {datetime.now(timezone.utc).strftime('%Y-%m-%d')} |
| last validation (pixel matching, val identities) | mean {vals[-1]['val_mean_cm']:.1f} cm, median {vals[-1]['val_median_cm']:.1f} cm, {vals[-1]['val_gross_pct']:.1f} % over 20 cm |
{_note(note)}
## Measured on {res['suite']} (test identities, {res['views']} views per full mesh)

Reproduce: `bodycorr benchmark --model src/bodycorr/weights/{name}.pt -o out/benchmark`

Errors are geodesic, in cm. AE = mean over pairs of the pair's mean error; WE = the worst pair's mean;
AEa = AE with each point weighted by the surface area it stands for (complete sources: their vertex
areas; Anny's head, hands and feet hold 72 % of the vertices and 27 % of the area; views already
sample by area, so AEa = AE there).
{_bench_note(res)}
"Flip" = a gross error (> 20 cm) nearer the mirror (left/right) of the truth than the truth.

| group (kind/pairs/noise) | AE | WE | AEa | median | < 5 cm % | < 10 cm % | > 20 cm % | flips of gross % |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

## Config

```json
{json.dumps(cfg, indent=2)}
```
"""
    write_text_atomic(WEIGHTS / f"{name}.md", card)
    return WEIGHTS / f"{name}.md"


def release_surface(run: Path, model: Path, cfg: dict, res: dict, name: str, command: str = "", note: str = "",
                    results: str | Path = "results.json", digest: str | None = None) -> Path:  # fmt: skip
    """Ship an image-to-surface (BodyMap) model with its card; ``res`` is ``bodycorr benchmark-image``
    output, whose row for this model (by the file's sha256) is the card's."""
    check_name(name)
    digest = digest or file_sha256(model)
    mine = [r for r in res.get("results") or [] if isinstance(r, dict) and r.get("model_sha256") == digest]
    if not mine:
        measured = ", ".join(f"{r.get('model')} (sha256 {str(r.get('model_sha256') or 'not recorded')[:12]})"
                             for r in res.get("results") or [] if isinstance(r, dict)) or "no model"  # fmt: skip
        raise BodycorrError(f"benchmark results {results}: no figures for model file {model} (sha256 {digest[:12]}...); they "
                            f"measured {measured}. Run 'bodycorr benchmark-image --model {model} -o DIR' and pass DIR/results.json.")  # fmt: skip
    if not (run / "log.jsonl").is_file():
        check_readable(run / "log.jsonl", "run log")
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines() if x.strip()]
    if not log:
        raise BodycorrError(f"run {run}: log.jsonl is empty; nothing was trained.")
    size_mb = model.stat().st_size / 2**20
    if size_mb > 20:
        raise BodycorrError(f"model file {model}: {size_mb:.1f} MB, over the 20 MB limit for a shipped model.")
    r = mine[0]
    others = [x for x in res["results"] if x is not r]
    every = cfg.get("log_every", 25)
    wall = sum(every * cfg["batch_size"] / x["img_per_s"] for x in log if x.get("img_per_s"))
    vals = [x for x in log if "val_geo_mean_cm" in x]
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, WEIGHTS / f"{name}.pt")

    def row(x: dict) -> str:
        label = f"{Path(x['model']).parent.name}/{Path(x['model']).name}" + (f" (shipped as `{name}`)" if x is r else "")
        return (f"| {label} | {x['acc_5px_pct']:.1f} | {x['acc_10px_pct']:.1f} | {x['acc_20px_pct']:.1f} | {x['AP']:.1f} | "
                f"{x['AP50']:.1f} | {x['AP75']:.1f} | {x['AR']:.1f} | {x.get('consistency_1_pct', float('nan')):.1f} | "
                f"{x.get('consistency_12_pct', float('nan')):.1f} | {x.get('consistency_120_pct', float('nan')):.1f} | {x['cpu_ms_128']:.0f} | {x['cpu_ms_256']:.0f} |")  # fmt: skip

    bc = res["config"]
    card = f"""# Model card: `{name}`

Image to template surface (BodyMap, Ianina et al. 2022, style), `{cfg['model']}`, surface code `{cfg['code']}`, {log[-1]['step']} training steps.

| | |
| --- | --- |
| file | `src/bodycorr/weights/{name}.pt` ({size_mb:.1f} MB, float16 weights) |
| command | `{command or f"bodycorr train --config {cfg['name']} --out {run}"}` |
| config | `configs/{cfg['name']}.json` (copied below) |
| seed | {cfg['seed']} |
| data | {cfg['train_images']} synthetic RGB views of Anny people (train identities only), {cfg['image']['size']}x{cfg['image']['size']}, rendered once by the training command (skin tones, patterned clothes, hair, backgrounds, occluders, crowds, upper-body crops, colour jitter), random left/right flips with mirrored labels |
| steps | {log[-1]['step']} at batch {cfg['batch_size']} ({log[-1]['step'] * cfg['batch_size']} views seen) |
| wall time | {wall / 3600:.2f} h of training steps (from the log's throughput; validation excluded) |
| hardware | {_hardware()} |
| made | {datetime.now(timezone.utc).strftime('%Y-%m-%d')} |
| last validation (val identities) | template-geodesic error of the predicted point: mean {vals[-1]['val_geo_mean_cm']:.1f} cm, median {vals[-1]['val_geo_median_cm']:.1f} cm, {vals[-1]['val_within_5cm_pct']:.0f} % within 5 cm; silhouette pixel accuracy {vals[-1]['val_sil_acc_pct']:.1f} % |
{_note(note)}
## Measured on synthetic test people (never seen in training)

Reproduce: `bodycorr benchmark-image --model src/bodycorr/weights/{name}.pt --images {bc['images']} --frames {bc['frames']}`

{bc['images']} test views at {bc['size']}x{bc['size']} (the engine's default image settings: crowds, occluders, upper-body crops);
2D = share of person pixels whose predicted point lies within 5/10/20 px of the truth (pixels at {bc['size']}x{bc['size']});
AP/AR over GPS thresholds 0.50:0.05:0.95 (kappa 0.255, template geodesics); TC = temporal consistency over
frame intervals 1/12/120 on a {bc['frames']}-frame key-pose motion (window {bc['window']} px); CPU ms = median
single-image inference of the person's pixels ({r.get('cpu_threads', '?')} threads, load average {r.get('cpu_load_avg', float('nan')):.1f} while timed). Reference (BodyMap paper, synthetic, 2D 5/10/20): 71.1 / 79.7 / 96.9 %, AP 79.5, TC 88.7 / 74.0 / 46.1 %.

| model | 2D@5 | 2D@10 | 2D@20 | AP | AP50 | AP75 | AR | TC@1 | TC@12 | TC@120 | CPU ms 128² | CPU ms 256² |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{row(r)}
{chr(10).join(row(x) for x in others)}

## Config

```json
{json.dumps(cfg, indent=2)}
```
"""
    write_text_atomic(WEIGHTS / f"{name}.md", card)
    return WEIGHTS / f"{name}.md"
