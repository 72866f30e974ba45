"""The evaluation run behind docs/evaluation.md: ``python scripts/eval_all.py [--provider auto] [--limit N]``.

Fuses the two standard test splits (``../shared/data/eval/tno25``, ``eval/roadscene50``) with the plain average, the
Laplacian pyramid and our shipped networks (every model the engine ships: ``lite``, ``base``, ``cdfusion``, as
``stream_fusion/weights/difffuse_<name>.onnx``, through the engine; skipped with a message while a file is absent),
scores every output with ``stream_fusion.evaluate.metrics`` (plus colour fidelity,
dE00, dE00_ab and chroma_r, on the colour set roadscene50), and writes the tables, the quality-bar checks and the grids (both
sets, the demo clip, and the colour grid visible | IR | base | cdfusion) into ``docs/`` (the results section of
``docs/evaluation.md`` between its markers; the hand-written text around it is kept). Fused images and per-pair CSVs
go under ``runs/eval/`` (git-ignored).

``--limit N`` scores only N pairs per set (the grid pairs first) for a quick check of the script itself; its outputs
then go under ``runs/eval_limit<N>/`` (docs included) unless ``--out`` / ``--docs`` say otherwise, so a short run
never overwrites the real results.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout, installed or not

from stream_fusion import DATA_DIR, DEMO_IR, DEMO_VIS  # noqa: E402
from stream_fusion.batch import fuse_folder, load_engine, load_pair  # noqa: E402
from stream_fusion.capture import match_pairs  # noqa: E402
from stream_fusion.engine import SHIPPED_MODELS, FusionEngine  # noqa: E402
from stream_fusion.engine.classical import BASELINES  # noqa: E402
from stream_fusion.engine.frames import to_gray  # noqa: E402
from stream_fusion.evaluate.score import (  # noqa: E402
    COLOUR_NOTES, daylight, load_triplet, make_grid, markdown_table, mean_scores, score_folder, stream_filter,
    write_csv, write_png,
)
from stream_fusion.evaluate.stability import DAYLIGHT_BAR, STATIC_LEVELS, temporal_change  # noqa: E402

DATA = DATA_DIR / "eval"
# Grid rows: people in the dark (TNO 11 and 25, RoadScene night streets), people by a house, a person in heathland.
SETS = {
    "tno25": ["tno25_01", "tno25_05", "tno25_11", "tno25_25"],
    "roadscene50": ["FLIR_00211", "FLIR_05893", "FLIR_07732", "FLIR_video_02829"],
}
ATTRIBUTION = (
    "Source images: TNO Image Fusion Dataset (A. Toet, figshare 2014, doi:10.6084/m9.figshare.1008029, CC BY 4.0; "
    "credit TNO, Soesterberg, The Netherlands) and RoadScene (H. Xu et al., \"U2Fusion\", IEEE TPAMI 2020, "
    "github.com/hanna-xu/RoadScene); test splits as distributed with CDDFuse (Zhao et al., CVPR 2023)."
)
DEMO_FRAMES = ["1800", "1810", "1821", "1831"]
# Colour grid rows (roadscene50): red traffic lights and people at night, a blue-lit building, a yellow-lit church,
# a daylight street (among the most colourful visible images of the set, by mean CIELAB chroma).
COLOUR_PAIRS = ["FLIR_06282", "FLIR_08021", "FLIR_06993", "FLIR_00211"]
COLOUR_SET = "roadscene50"
LABELS = {"average": "plain average", "laplacian": "Laplacian pyramid", "lite": "ours (lite)", "base": "ours (base)",
          "cdfusion": "ours (cdfusion, colour)"}
# Published peers' fused outputs (their authors' weights; ../shared/peers/README.md says how they were made): scored
# with our metrics beside ours wherever a set's folder exists. Never trained or selected on.
PEER_DIR = DATA_DIR.parent / "peers"
PEERS = {"seafusion": "SeAFusion (peer)", "tardal": "TarDAL (peer)", "reconet": "ReCoNet (peer)"}
LABELS.update(PEERS)
DAYLIGHT_NEARLY_ALL = 0.9  # issue 15: daylight kept "on (nearly) every pair"; the worst pair is reported beside it
SEQUENCE = DATA_DIR / "sequences" / "nato_camp"  # the steady-video measure's sequence (32 consecutive frames)
# The day / night picture: a daylight street with dark flat IR (the dimming issue 15 names) and a night street with
# pedestrians only the IR shows clearly.
DAY_NIGHT = {"day": ("roadscene50", "FLIR_00211"), "night": ("roadscene50", "FLIR_05893")}
RESULTS_BEGIN = "<!-- results: written by scripts/eval_all.py; edits between these markers are overwritten -->"
RESULTS_END = "<!-- end of results -->"
PAPER_TNO_FLOOR = {"VIF": 0.72, "Qabf": 0.52}  # DiffFuseNet's weakest ablation row on TNO (one-stage training)


def cpu_name() -> str:
    """The CPU model for the "how measured" line (Linux), else the architecture."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def onnx_metadata(path: Path) -> dict[str, str]:
    """The metadata a shipped ONNX file carries (``export.network`` writes model_version and training), so the report
    names exactly which weights it scored and never reports an untrained placeholder as ours."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)


def describe_training(training: str) -> str:
    """A few words from the JSON training record (epochs, device, date), or the text as it is."""
    try:
        record = json.loads(training)
    except ValueError:
        return training
    if not isinstance(record, dict):
        return training
    return ", ".join(f"{key} {record[key]}" for key in ("epochs", "stage1_epochs", "device", "date") if key in record)


def available_methods(provider: str) -> tuple[dict[str, FusionEngine], list[str]]:
    """Engines to run, in table order, and one line per network saying which file was scored (or why not).

    Every model the engine ships (``SHIPPED_MODELS``, in its order) is scored through the engine by name
    (``load_engine("cdfusion")``), so it runs exactly as ``fuse`` and ``run_stream.py`` serve it: a colour model
    outputs colour itself, lite and base take the YCbCr route."""
    engines: dict[str, FusionEngine] = {name: cls() for name, cls in BASELINES.items()}
    notes = []
    for preset, path in SHIPPED_MODELS.items():
        LABELS.setdefault(preset, f"ours ({preset})")
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        if not path.exists():
            notes.append(f"{LABELS[preset]}: not evaluated, {shown} does not exist yet")
            print(f"skip {preset}: {path} does not exist", flush=True)
            continue
        meta = onnx_metadata(path)
        training = meta.get("training", "")
        if "placeholder" in training.lower() or "untrained" in training.lower():
            notes.append(f"{LABELS[preset]}: {shown} is marked '{training}', numbers are NOT ours")
            LABELS[preset] += " UNTRAINED"
        else:
            notes.append(f"{LABELS[preset]}: `{shown}`, model_version {meta.get('model_version', '?')}; its last "
                         f"training run: {describe_training(training) or 'not recorded'} (history: docs/model.md)")
        engines[preset] = load_engine(preset, provider)
    return engines, notes


def quality_bar(means: dict[str, dict[str, dict[str, float]]]) -> list[tuple[str, str, str, str, str]]:
    """(check, set, value, required, verdict) rows for issue 3's quality bar; 'not run' where a network is absent."""
    rows = []
    for split, by_method in means.items():
        base, lite = by_method.get("base"), by_method.get("lite")
        for metric in ("VIF", "Qabf"):
            best = max(by_method[b][metric] for b in BASELINES)
            rows.append((f"base {metric} > both baselines", split, f"{base[metric]:.3f}" if base else "-",
                         f"> {best:.3f}", ("PASS" if base[metric] > best else "FAIL") if base else "not run"))
        required = 0.92 * by_method["average"]["SSIM"]
        rows.append(("base SSIM >= 0.92 x average", split, f"{base['SSIM']:.3f}" if base else "-",
                     f">= {required:.3f}", ("PASS" if base["SSIM"] >= required else "FAIL") if base else "not run"))
        if split == "tno25":
            for metric, floor in PAPER_TNO_FLOOR.items():
                rows.append((f"base {metric} >= paper's weakest ablation", split,
                             f"{base[metric]:.3f}" if base else "-", f">= {floor:.2f}",
                             ("PASS" if base[metric] >= floor else "FAIL") if base else "not run"))
        for metric in ("VIF", "Qabf"):
            ok = lite and base and lite[metric] >= 0.95 * base[metric]
            rows.append((f"lite {metric} >= 0.95 x base", split, f"{lite[metric]:.3f}" if lite else "-",
                         f">= {0.95 * base[metric]:.3f}" if base else ">= 0.95 x base",
                         ("PASS" if ok else "FAIL") if lite and base else "not run"))
    return rows


def robustness_bar(means: dict[str, dict[str, dict[str, float]]], days: dict[str, dict[str, dict[str, float]]],
                   flicker: dict[str, dict[str, float]], model: str = "lite") -> list[tuple[str, str, str, str, str]]:
    """(check, set, value, required, verdict) rows of issue 15's bar for ``model`` (the default network): above the
    Laplacian pyramid on VIF and Qabf and SSIM >= 0.92x the plain average's on every set, above SeAFusion on VIF and
    Qabf (where its outputs were scored), daylight >= 0.8x on (nearly: ``DAYLIGHT_NEARLY_ALL``) every
    visible-brighter pair, flicker <= 1.0x as the stream delivers the frames (through its steady-video filter; the
    network alone's in the value too)."""
    rows = []
    for split, by_method in means.items():
        ours = by_method.get(model)
        verdict = lambda ok: ("PASS" if ok else "FAIL") if ours else "not run"  # noqa: E731
        value = lambda metric: f"{ours[metric]:.3f}" if ours else "-"  # noqa: E731
        for metric in ("VIF", "Qabf"):
            lap = by_method["laplacian"][metric]
            rows.append((f"{model} {metric} > Laplacian pyramid", split, value(metric), f"> {lap:.3f}",
                         verdict(ours and ours[metric] > lap)))
        required = 0.92 * by_method["average"]["SSIM"]
        rows.append((f"{model} SSIM >= 0.92 x average", split, value("SSIM"), f">= {required:.3f}",
                     verdict(ours and ours["SSIM"] >= required)))
        if "seafusion" in by_method:
            for metric in ("VIF", "Qabf"):
                peer = by_method["seafusion"][metric]
                rows.append((f"{model} {metric} > SeAFusion", split, value(metric), f"> {peer:.3f}",
                             verdict(ours and ours[metric] > peer)))
        day = days.get(split, {}).get(model)
        if day:
            rows.append((f"{model} daylight >= {DAYLIGHT_BAR}x visible", split,
                         f"min {day['min']:.2f}, {100 * day['kept']:.0f} % of {day['pairs']:.0f}",
                         f"(nearly) every pair: >= {100 * DAYLIGHT_NEARLY_ALL:.0f} %",
                         "PASS" if day["kept"] >= DAYLIGHT_NEARLY_ALL else "FAIL"))
    if model in flicker:
        streamed, alone = flicker[model]["streamed"], flicker[model]["alone"]
        rows.append((f"{model} flicker <= 1.0x the inputs', as streamed", "nato_camp",
                     f"{streamed:.2f} (network alone {alone:.2f})", "<= 1.00", "PASS" if streamed <= 1.0 else "FAIL"))
    return rows


def stability_table(days: dict[str, dict[str, dict[str, float]]], flicker: dict[str, dict[str, float]]) -> str:
    """Every method's daylight measure on each set and its flicker on the sequence (its frames alone, and as the
    stream delivers them), one row per method."""
    methods = list(dict.fromkeys(m for by_method in days.values() for m in by_method))
    lines = ["| method | " + " | ".join(f"{split} daylight min / median / kept" for split in days)
             + " | nato_camp flicker, fused alone | nato_camp flicker, as streamed |", "|---" * (len(days) + 3) + "|"]
    for method in methods:
        cells = []
        for split in days:
            day = days[split].get(method)
            cells.append(f"{day['min']:.2f} / {day['median']:.2f} / {100 * day['kept']:.0f} %" if day else "-")
        cells += [f"{flicker[method][key]:.2f}" if method in flicker else "-" for key in ("alone", "streamed")]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sequence_flicker(engine: FusionEngine) -> dict[str, float]:
    """Static-region flicker of the engine on the sequence (frames fused in memory, in name order): ``alone``, the
    engine's frames; ``streamed``, the frames run_stream.py delivers, through its steady-video filter."""
    alone, streamed, steady = [], [], stream_filter()
    for name, ir_path, vis_path in match_pairs(SEQUENCE / "ir", SEQUENCE / "vis"):
        ir, vis = load_pair(name, ir_path, vis_path)
        fused = engine.fuse(ir, vis)
        alone.append((to_gray(fused), ir, to_gray(vis)))
        streamed.append((to_gray(steady(fused, ir, vis)), ir, to_gray(vis)))
    return {"alone": temporal_change(alone)["ratio"], "streamed": temporal_change(streamed)["ratio"]}


def write_day_night_grid(engines: dict[str, FusionEngine], target: Path) -> str:
    """A day scene and a night scene: IR | visible | ours | the peers | the Laplacian pyramid (peers as their
    authors' weights made them, from ``PEER_DIR``; a peer without that pair's output is left out)."""
    ours = [m for m in ("lite", "base", "cdfusion") if m in engines]
    peers = [p for p in PEERS if all((PEER_DIR / split / p / f"{name}.png").exists() for split, name in DAY_NIGHT.values())]
    rows = []
    for scene, (split, name) in DAY_NIGHT.items():
        ir, vis = load_pair(name, DATA / split / "ir" / f"{name}.png", DATA / split / "vis" / f"{name}.png")
        images = [ir, vis, *(engines[m].fuse(ir, vis) for m in ours)]
        images += [load_triplet(name, DATA / split / "ir" / f"{name}.png", DATA / split / "vis" / f"{name}.png",
                                PEER_DIR / split / p / f"{name}.png")[2] for p in peers]
        images.append(engines["laplacian"].fuse(ir, vis))
        rows.append((f"{scene}: {name}", images))
    headers = ["IR", "visible", *(f"ours {m}" for m in ours), *(LABELS[p].replace(" (peer)", "")
               for p in peers), "Laplacian"]
    if not cv2.imwrite(str(target), make_grid(rows, headers, height=200), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        raise SystemExit(f"cannot write {target}")
    return " | ".join(headers)


def colour_bar(by_method: dict[str, dict[str, float]]) -> list[tuple[str, str, str, str]]:
    """(check, value, required, verdict) rows for issue 6's bar on the colour set: cdfusion's colour error below
    the base model's YCbCr route, with VIF and Qabf within 5% of base; 'not run' where either network is absent."""
    cd, base = by_method.get("cdfusion"), by_method.get("base")
    both = cd is not None and base is not None
    rows = [(f"cdfusion {metric} < base {metric} (YCbCr route)", f"{cd[metric]:.{digits}f}" if cd else "-",
             f"< {base[metric]:.{digits}f}" if base else "< base",
             ("PASS" if cd[metric] < base[metric] else "FAIL") if both else "not run")
            for metric, digits in (("dE00", 2), ("dE00_ab", 3))]
    for metric in ("VIF", "Qabf"):
        rows.append((f"cdfusion {metric} >= 0.95 x base", f"{cd[metric]:.3f}" if cd else "-",
                     f">= {0.95 * base[metric]:.3f}" if base else ">= 0.95 x base",
                     ("PASS" if cd[metric] >= 0.95 * base[metric] else "FAIL") if both else "not run"))
    return rows


def colour_table(by_method: dict[str, dict[str, float]]) -> str:
    """Every method's colour fidelity next to the two structural metrics the bar trades it against."""
    columns = ("dE00", "dE00_ab", "chroma_r", "VIF", "Qabf")
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method, scores in by_method.items():
        cells = [f"{scores['dE00']:.2f}", *(f"{scores[m]:.3f}" for m in columns[1:])]
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pick_pairs(split: str, limit: int | None) -> list[str]:
    """The pairs a run scores: all of them, or with ``--limit`` the grid pairs first, then the rest by name."""
    names = [name for name, _, _ in match_pairs(DATA / split / "ir", DATA / split / "vis")]
    if limit is None:
        return names
    wanted = [*SETS[split], *names]
    return list(dict.fromkeys(n for n in wanted if n in names))[:limit]


def pair_dirs(split: str, names: list[str], root: Path) -> tuple[Path, Path]:
    """The set's own folders, or for a subset, copies of its pairs under ``root`` (the CLIs work on folders)."""
    ir_dir, vis_dir = DATA / split / "ir", DATA / split / "vis"
    pairs = match_pairs(ir_dir, vis_dir)
    if len(names) == len(pairs):
        return ir_dir, vis_dir
    subset = root / "pairs" / split
    shutil.rmtree(subset, ignore_errors=True)
    for role in ("ir", "vis"):
        (subset / role).mkdir(parents=True)
    for name, ir_path, vis_path in pairs:
        if name in names:
            shutil.copy(ir_path, subset / "ir")
            shutil.copy(vis_path, subset / "vis")
    return subset / "ir", subset / "vis"


def write_grid(split: str, engines: dict[str, FusionEngine], out: Path, target: Path,
               dirs: tuple[Path, Path] | None = None) -> str:
    """IR | visible | ours (base) | Laplacian for the chosen pairs; without base, IR | visible | Laplacian."""
    columns = [m for m in ("base", "laplacian") if m in engines]
    ir_dir, vis_dir = dirs or (DATA / split / "ir", DATA / split / "vis")
    paths = {name: (ir, vis) for name, ir, vis in match_pairs(ir_dir, vis_dir)}
    rows = []
    for name in [n for n in SETS[split] if n in paths] or list(paths)[:4]:
        images = [load_triplet(name, *paths[name], out / split / m / f"{name}.png") for m in columns]
        rows.append((name, [images[0][0], images[0][1], *(fused for _, _, fused in images)]))
    write_png(target, make_grid(rows, ["IR", "visible", *(LABELS[m] for m in columns)], height=220))
    return " | ".join(["IR", "visible", *(LABELS[m] for m in columns)])


def write_colour_grid(engines: dict[str, FusionEngine], target: Path) -> str:
    """Visible | IR | ours (base), YCbCr route | ours (cdfusion): the colour examples issue 6 asks for, visible
    first so the eye compares each fused image's colours with it. Fused in memory (a ``--limit`` run shows the same
    pairs); returns the pairs and columns for the caption."""
    rows = []
    for name in COLOUR_PAIRS:
        ir, vis = load_pair(name, DATA / COLOUR_SET / "ir" / f"{name}.png", DATA / COLOUR_SET / "vis" / f"{name}.png")
        rows.append((name, [vis, ir, engines["base"].fuse(ir, vis), engines["cdfusion"].fuse(ir, vis)]))
    headers = ["visible", "IR", f"{LABELS['base']}, YCbCr route", LABELS["cdfusion"]]
    # JPEG: a grid of colour photographs is 1.5 MB as PNG and a fifth of that at a quality that shows no artefacts.
    if not cv2.imwrite(str(target), make_grid(rows, headers, height=220), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise SystemExit(f"cannot write {target}")
    return f"pairs {', '.join(COLOUR_PAIRS)}: {' | '.join(headers)}"


def write_demo_grid(engines: dict[str, FusionEngine], target: Path) -> str:
    """The demo clip (Nato_camp: a person walking, visible only in IR) at a few frames, fused in memory: the
    picture that shows whether the network keeps a thermal target the visible camera cannot see."""
    columns = [m for m in ("base", "lite", "laplacian") if m in engines]
    rows = []
    for name in DEMO_FRAMES:
        ir, vis = load_pair(name, DEMO_IR / f"{name}.png", DEMO_VIS / f"{name}.png")
        rows.append((name, [ir, vis, *(engines[m].fuse(ir, vis) for m in columns)]))
    write_png(target, make_grid(rows, ["IR", "visible", *(LABELS[m] for m in columns)], height=220))
    return " | ".join(["IR", "visible", *(LABELS[m] for m in columns)])


def write_results(path: Path, text: str) -> None:
    """Replace the generated results section of ``path``, keeping the hand-written text around it."""
    existing = path.read_text() if path.exists() else ""
    if RESULTS_BEGIN in existing and RESULTS_END in existing:
        head, rest = existing.split(RESULTS_BEGIN, 1)
        tail = rest.split(RESULTS_END, 1)[1]
    else:
        head, tail = existing + "\n" if existing else "", "\n"
    path.write_text(f"{head}{RESULTS_BEGIN}\n{text}\n{RESULTS_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", default="auto", help="ONNX Runtime provider for the networks (default auto)")
    parser.add_argument("--limit", type=int, help="score only N pairs per set (a quick check; default: all)")
    parser.add_argument("--out", type=Path, help="fused images and CSVs (default runs/eval, or runs/eval_limit<N>)")
    parser.add_argument("--docs", type=Path, help="where evaluation.md and the grids go (default docs/, or "
                        "<out>/docs with --limit)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    args.out = args.out or REPO / "runs" / ("eval" if args.limit is None else f"eval_limit{args.limit}")
    args.docs = args.docs or (REPO / "docs" if args.limit is None else args.out / "docs")
    started = time.perf_counter()
    engines, notes = available_methods(args.provider)
    means: dict[str, dict[str, dict[str, float]]] = {}
    timing: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    dirs: dict[str, tuple[Path, Path]] = {}
    picked: dict[str, list[str]] = {}
    days: dict[str, dict[str, dict[str, float]]] = {}
    for split in SETS:
        picked[split] = pick_pairs(split, args.limit)
        ir_dir, vis_dir = dirs[split] = pair_dirs(split, picked[split], args.out)
        means[split] = {}
        for method, engine in engines.items():
            fused_dir = args.out / split / method
            counts[split], seconds = fuse_folder(engine, ir_dir, vis_dir, fused_dir)
            timing.setdefault(method, {})[split] = seconds
            rows = score_folder(ir_dir, vis_dir, fused_dir)
            write_csv(rows, args.out / split / f"{method}.csv")
            means[split][method] = mean_scores(rows)
            days.setdefault(split, {})[method] = daylight(rows)
            print(f"{split} {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in means[split][method].items()),
                  flush=True)
        for peer in PEERS:
            if (PEER_DIR / split / peer).is_dir():
                rows = score_folder(ir_dir, vis_dir, PEER_DIR / split / peer)
                write_csv(rows, args.out / split / f"{peer}.csv")
                means[split][peer] = mean_scores(rows)
                days[split][peer] = daylight(rows)
    flicker = {method: sequence_flicker(engine) for method, engine in engines.items()}

    args.docs.mkdir(parents=True, exist_ok=True)
    grids = {split: write_grid(split, engines, args.out, args.docs / f"grid_{split}.png", dirs[split])
             for split in SETS}
    demo_grid = write_demo_grid(engines, args.docs / "grid_nato_camp.png")
    colour_grid = None
    if "base" in engines and "cdfusion" in engines:
        colour_grid = write_colour_grid(engines, args.docs / "colour_grid.jpg")
    else:
        print("skip colour grid: it needs ours (base) and ours (cdfusion) evaluated", flush=True)
    day_night = write_day_night_grid(engines, args.docs / "grid_day_night.jpg")
    elapsed = time.perf_counter() - started
    providers = ", ".join(f"{LABELS[m]}: {e.provider}" for m, e in engines.items() if m not in BASELINES)
    lines = [
        "## Results: our networks against two classical baselines and three published peers",
        "",
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC by `python scripts/eval_all.py` "
        f"on a 2-core x86-64 CPU, no GPU ({cpu_name()}, shared with other jobs); the whole run took "
        f"{elapsed:.0f} s. Inputs at their native sizes: `eval/tno25` ({counts['tno25']} pairs, 256-768 px, gray) "
        f"and `eval/roadscene50` ({counts['roadscene50']} pairs, ~500x330, visible RGB), the test splits "
        "CDDFuse and most IVIF papers report on (never used for training). Every method but cdfusion fuses the "
        "visible *luma* with IR and puts the visible chroma back (the YCbCr route); cdfusion outputs colour itself. "
        "The published peers (SeAFusion, TarDAL, ReCoNet) are their authors' outputs from their released weights "
        "(`../shared/peers/README.md`: SeAFusion colour by the YCbCr route, TarDAL and ReCoNet gray), scored with "
        "the same code. "
        "Every fused image is scored on its gray/luma by `python -m stream_fusion.evaluate`'s metrics "
        "(MI, VIF and SSIM summed over the two sources; see Metric conventions below) and, on roadscene50 (colour "
        "visible images), on its colour fidelity to the visible image (dE00, dE00_ab, chroma_r; see Colour fidelity below). "
        "Means over the pairs.",
        "",
        "Higher is better for every column but dE00. EN, SD, SF and AG reward noise as much as information; judge "
        "by VIF, Qabf, SSIM and MI, and by the images. The plain average maximises SSIM (it is the closest image to "
        "both sources at once) but halves the contrast of every thermal target; the Laplacian pyramid keeps the "
        "stronger detail of either source at each scale.",
        "",
    ]
    if args.limit is not None:
        lines += [f"**Quick check (`--limit {args.limit}`): only {args.limit} pairs of each set (the grid pairs "
                  "first), NOT the test sets' numbers.**", ""]
    if notes:
        lines += [f"- {note}" for note in notes] + [""]
    for split in SETS:
        lines += [f"### {split}", "", markdown_table([(LABELS[m], s) for m, s in means[split].items()], "method"), ""]
    lines += [
        "### Quality bar (issue 3, item 9)",
        "",
        "| check | set | value | required | verdict |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in quality_bar(means)),
        "",
        "### Daylight and steady video (issue 15)",
        "",
        f"Daylight: the fused frame's mean luma over the visible frame's, on the pairs where the visible frame is the "
        f"brighter source (worst pair / median / share of those pairs at or above {DAYLIGHT_BAR}x). Flicker: on the "
        f"{SEQUENCE.name} sequence (32 consecutive frames), in static regions (both inputs change by under "
        f"{STATIC_LEVELS:g} gray levels from one frame to the next), the fused frame's mean change over the inputs' "
        "(the larger of the two at each pixel); at most 1.0 adds no flicker. \"Fused alone\": each frame as the "
        "method fuses it; \"as streamed\": those frames as `run_stream.py` delivers them, through its steady-video "
        "filter (`stream_fusion/steady.py`, on by default for streams, not in batch fusion; docs/pipeline.md). Both by "
        "`stream_fusion.evaluate` (`--temporal DIR --steady`; `stream_fusion/evaluate/stability.py`); the peers have "
        "no outputs for the sequence.",
        "",
        stability_table(days, flicker),
        "",
        "Issue 15's bar for the default network (lite), and the same checks for base and cdfusion:",
        "",
        "| check | set | value | required | verdict |",
        "|---|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for model in ("lite", "base", "cdfusion")
          for row in robustness_bar(means, days, flicker, model) if model in engines),
        "",
        f"### Colour fidelity on {COLOUR_SET} (issue 6)",
        "",
        COLOUR_NOTES + " Both are computed in CIELAB (OpenCV, D65) by `stream_fusion.evaluate.metrics.colour_metrics`; "
        "dE00 follows Sharma, Wu & Dalal (2005) and is checked against their 34 published test pairs and "
        "scikit-image (`tests/test_colour_metrics.py`). The YCbCr route keeps the visible chroma, so its chroma_r is "
        "near 1 and its dE00 is almost all lightness: the fusion brightens IR targets and lifts dark night scenes "
        "(see \"Colour fidelity\" above the results). A lower dE00 mostly means a fused lightness closer to the "
        "visible one.",
        "",
        colour_table(means[COLOUR_SET]),
        "",
        "| check | value | required | verdict |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in colour_bar(means[COLOUR_SET])),
        "",
        "### Metric conventions",
        "",
        "`stream_fusion/evaluate/metrics.py` reproduces the MMIF-CDDFuse evaluator's definitions (checked to 4 decimals against "
        "a run of that evaluator's scipy / scikit-learn / scikit-image code on real pairs; see `tests/test_metrics.py`"
        "). Two library defaults are made explicit: MI uses the natural log (scikit-learn), and SSIM uses L = 255 "
        "(Wang et al. 2004). That evaluator called scikit-image on float images without `data_range`, which "
        "scikit-image of the time took as 2, shrinking the stabilising constants: published SSIM columns computed "
        "that way read about 0.4-0.5 lower than ours (the plain average of tno25_01 scores 1.52 here and 1.02 that "
        "way), so compare SSIM only within this table. Qabf uses Sobel with zero padding and the Xydeas-Petrovic "
        "constants; an image that keeps every edge perfectly scores 0.975.",
        "",
        "### Time per pair",
        "",
        "Engine time only (`FusionEngine.fuse`, including the YCbCr route's luma/chroma split; file reading and writing "
        "excluded), "
        f"mean over each set, same machine and run{' (' + providers + ')' if providers else ''}. Time grows with the "
        "pixel count (tno25 is mostly 768x576 and 620x450, roadscene50 ~500x330), and the CPU was shared with other "
        "jobs: take these as upper bounds; `docs/engine.md` has the controlled engine benchmark.",
        "",
        "| method | " + " | ".join(f"{split} ms/pair" for split in SETS) + " |",
        "|---|" + "---|" * len(SETS),
        *(f"| {LABELS[m]} | " + " | ".join(f"{timing[m][s] * 1000:.1f}" for s in SETS) + " |" for m in engines),
        "",
        "### Grids",
        "",
        ATTRIBUTION,
        "",
    ]
    for split in SETS:
        shown = [n for n in SETS[split] if n in picked[split]] or picked[split][:4]
        lines += [f"`docs/grid_{split}.png`: {grids[split]}; pairs {', '.join(shown)}.", "",
                  f"![{split}](grid_{split}.png)", ""]
    lines += [f"`docs/grid_day_night.jpg`: a day scene ({DAY_NIGHT['day'][1]}: bright visible, dark flat IR) and a "
              f"night scene ({DAY_NIGHT['night'][1]}: pedestrians the IR shows), {day_night}; peers' outputs from "
              "their authors' weights (`../shared/peers/README.md`).", "", "![day and night](grid_day_night.jpg)", ""]
    lines += [f"`docs/grid_nato_camp.png`: the demo clip (`stream_fusion/assets/nato_camp`, TNO Nato_camp, a person "
              f"walking who shows only in IR), frames {', '.join(DEMO_FRAMES)}: {demo_grid}.", "",
              "![nato_camp](grid_nato_camp.png)", ""]
    if colour_grid:
        lines += [f"`docs/colour_grid.jpg`: colour examples from {COLOUR_SET}, {colour_grid}.", "",
                  "![colour](colour_grid.jpg)", ""]
    else:
        lines += ["`docs/colour_grid.jpg` (visible | IR | ours (base), YCbCr route | ours (cdfusion, colour)): not "
                  "drawn, ours (cdfusion, colour) was not evaluated in this run.", ""]
    lines += [
        "### Reproduce",
        "",
        "```",
        "python scripts/eval_all.py                      # all of the above; fused images under runs/eval/",
        "python scripts/eval_all.py --limit 3            # quick check of the script: 3 pairs per set, under "
        "runs/eval_limit3/",
        "python -m stream_fusion.batch --ir ../shared/data/eval/tno25/ir --vis ../shared/data/eval/tno25/vis \\",
        "    --out runs/tno25_base --model base",
        "python -m stream_fusion.evaluate --ir ../shared/data/eval/tno25/ir --vis ../shared/data/eval/tno25/vis \\",
        "    --fused runs/tno25_base --label 'ours (base)'   # metrics.md, metrics.csv, grid.png",
        "```",
        "",
    ]
    write_results(args.docs / "evaluation.md", "\n".join(lines))
    print(f"wrote {args.docs / 'evaluation.md'} and the grids in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
