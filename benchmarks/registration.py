"""Registration benchmark: known rig-like warps of the validation pairs, estimators side by side.

    python benchmarks/registration.py [--warps 2] [--limit N] [--domains ...] [--methods ...] [--fusion refinefuse]

The set is fixed and seeded: every validation pair (``ivif/val/roadscene`` and the bundled ``mixed``
split of ``ivif/train``; never a training pair), its longer side brought to at most 640 pixels, is
misaligned ``--warps`` times by :func:`ivfusion.registration.synthetic.random_registration`:
translation up to +-30 px, rotation +-5 deg, scale +-8 %, mild perspective (corners +-1.5 % of the
shorter side), a smooth elastic field of up to 8 px, and for half of the warps an infrared camera of
0.4-0.8 times the visible resolution. Each method registers the rendered infrared to the visible
image; the benchmark reports, side by side in one run:

* **EPE vs labels**: end-point error (visible pixels) of the estimate against the synthetic warp,
  per pair the mean over the true infrared footprint; the table gives the median and 95th
  percentile over pairs and the share of pairs under 2 px;
* **EPE vs own alignment**: the same error measured from where the method itself registers the
  *unwarped* pair (:func:`~ivfusion.registration.synthetic.end_point_error` with ``reference``).
  The validation pairs are not aligned perfectly (RoadScene's are off by a few pixels, MSRS's by
  20-60, see ``docs/registration.md``); this column measures whether a method recovers the known
  warp, independently of the dataset's own misalignment; "structure only" restricts it to the
  visible pixels with structure (:func:`structure_mask`): the elastic field of a flat region (a
  night sky) changes nothing in either image, so no method can recover it there;
* time per pair (registration only, ``--threads`` CPU threads);
* fusion quality: VIF and Qabf (``ivfusion.metrics``) of the pair fused after registration, without
  registration (resized only) and perfectly registered (warped by the true registration), all scored
  against the aligned infrared and the visible image.

Compared: no registration, OpenCV ECC on gradient magnitudes (affine, 3-level pyramid) and elastix
(itk-elastix; Mattes mutual information, affine and affine + B-spline), and ivfusion's estimators;
and, as the issue's "reachable" rows, ivfusion's estimator registering the infrared camera image to
the true aligned infrared (one modality: the labels are exact there, and both images show the same
structure everywhere). ``--label-check`` measures how far the unwarped pairs themselves are from
aligned (:func:`label_check`).
OpenCV and itk-elastix are the ``[bench]`` extra: ``pip install -e '.[bench]'``.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

import ivfusion
from ivfusion.metrics import evaluate
from ivfusion.registration import LOW_CONFIDENCE, ClassicalSettings, Registration, RegistrationWarning, register
from ivfusion.registration._geometry import (apply_homography, homography_from_points, inside_mask, pixel_grid,
                                              sample, scale_matrix)
from ivfusion.registration.synthetic import WarpRanges, end_point_error, random_registration, render_infrared
from ivfusion.train.data import find_pairs, load_luma
from ivfusion.train.splits import split_pairs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ivif"
MAX_SIDE = 640
SEED = 2030
RANGES = WarpRanges()  # +-30 px, +-5 deg, +-8 %, perspective 1.5 %, elastic <= 8 px, low-res half the time


@dataclass
class Sample:
    name: str
    ir: torch.Tensor  # (1, H, W) aligned infrared in [0, 1]
    vis: torch.Tensor  # (1, H, W)
    moving: torch.Tensor  # (1, h, w): the infrared camera's image
    truth: Registration


def _shrink(x: torch.Tensor) -> torch.Tensor:
    f = min(1.0, MAX_SIDE / max(x.shape[-2:]))
    if f == 1.0:
        return x
    size = (round(x.shape[-2] * f), round(x.shape[-1] * f))
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def validation_pairs():
    pairs = [(f"val/roadscene/{p.stem}", p) for p in find_pairs(DATA / "val" / "roadscene")]
    train = [DATA / "train" / d for d in ("tno", "msrs", "llvip", "roadscene")]
    for domain, found in split_pairs("mixed", train).items():
        pairs += [(f"mixed/{domain}/{p.stem}", p) for p in found]
    return pairs


def _to_size(x: torch.Tensor, size: Optional[Tuple[int, int]]) -> torch.Tensor:
    if size is None:
        return _shrink(x)
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0].clamp(0, 1)


def build_samples(warps: int, limit: Optional[int] = None, size: Optional[Tuple[int, int]] = None,
                  domains: Optional[Sequence[str]] = None
                  ) -> Tuple[List[Sample], Dict[str, Tuple[torch.Tensor, torch.Tensor]]]:
    """The fixed set, and the unwarped pairs by name (for the 'own alignment' reference); ``size``
    ``(H, W)``: every pair resized to it (timing at a fixed size) instead of shrunk to 640 px;
    ``domains``: only the pairs of these domains (``"mixed/msrs"``), each with the same warps as in
    the whole set."""
    samples, natives = [], {}
    pairs = validation_pairs()
    if limit:
        pairs = pairs[:: max(1, len(pairs) // limit)][:limit]
    for k, (name, p) in enumerate(pairs):
        if domains is not None and name.rsplit("/", 1)[0] not in domains:
            continue
        ir = _to_size(torch.from_numpy(load_luma(p.ir)).float()[None] / 255.0, size)
        vis = _to_size(torch.from_numpy(load_luma(p.vis)).float()[None] / 255.0, size)
        natives[name] = (ir, vis)
        for j in range(warps):
            rng = np.random.default_rng(np.random.SeedSequence([SEED, k, j]))
            truth = random_registration(tuple(vis.shape[-2:]), rng, RANGES)
            samples.append(Sample(f"{name}#{j}", ir, vis, render_infrared(ir, truth), truth))
    return samples, natives


# ------------------------------------------------------------------------------------------ methods
# Each method maps (moving (1, h, w), vis (1, H, W)) in [0, 1] to the dense (H, W, 2) infrared pixel
# coordinates seen at each visible pixel.


def _nominal(moving: torch.Tensor, vis: torch.Tensor) -> np.ndarray:
    """The infrared resized to the visible size (same field of view), as float32 numpy."""
    return F.interpolate(moving[None], size=tuple(vis.shape[-2:]), mode="bilinear", align_corners=False,
                         antialias=True)[0, 0].numpy()


def _from_nominal(coords: np.ndarray, ir_size, vis_size) -> torch.Tensor:
    """Coordinates in the nominal (resized) infrared -> the infrared's own pixels."""
    m = scale_matrix(vis_size, ir_size)
    c = torch.from_numpy(coords).double()
    return c * torch.stack([m[0, 0], m[1, 1]]) + torch.stack([m[0, 2], m[1, 2]])


def structure_mask(vis: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """``(H, W)`` bool: the visible pixels with structure, where a displacement is observable at all.

    The elastic part of a synthetic warp moves flat regions too (a night sky, a wall), but a flat
    region looks the same however it is displaced: no method can recover the field there, and the
    fused image does not depend on it. Structure: the visible gradient magnitude, Gaussian-smoothed
    (``sigma`` px), at least its image mean (the NGF edge threshold the estimator uses, factor 1)."""
    from ivfusion.registration._levels import _gaussian
    from ivfusion.registration._similarity import gradients
    gx, gy = gradients(vis[None].float())
    mag = _gaussian(torch.sqrt(gx * gx + gy * gy), sigma)[0, 0]
    return mag >= mag.mean().clamp_min(1e-3)  # the floor: a flat image has no structure


def homography_floor(s: Sample) -> float:
    """EPE (px, mean over the footprint) of the best homography fitted by least squares to the true
    mapping (every 8th pixel): what no homography estimator can beat on this warp."""
    h, w = s.truth.vis_size
    x = pixel_grid(h, w, dtype=torch.float64)
    m = s.truth.mapping().double()
    fit = homography_from_points(x[::8, ::8].reshape(-1, 2), m[::8, ::8].reshape(-1, 2))
    e, mask = end_point_error(apply_homography(fit, x), s.truth)
    return float(e[mask].mean())


def method_none(moving, vis):
    return Registration.identity(tuple(moving.shape[-2:]), tuple(vis.shape[-2:])).mapping()


def method_ecc(moving, vis):
    import cv2

    def grad(a):
        a = cv2.GaussianBlur(a, (5, 5), 1.0)
        return cv2.magnitude(cv2.Sobel(a, cv2.CV_32F, 1, 0), cv2.Sobel(a, cv2.CV_32F, 0, 1))

    fixed, mov = grad(vis[0].numpy().astype(np.float32)), grad(_nominal(moving, vis).astype(np.float32))
    warp = np.eye(2, 3, dtype=np.float32)
    for level in (2, 1, 0):  # coarse to fine
        f = 0.5 ** level
        fs = cv2.resize(fixed, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        ms = cv2.resize(mov, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        w = warp.copy()
        w[:, 2] *= f
        try:
            _, w = cv2.findTransformECC(fs, ms, w, cv2.MOTION_AFFINE,
                                        (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5), None, 5)
        except cv2.error:
            break  # did not converge: keep the previous level's estimate
        w[:, 2] /= f
        warp = w
    h, wd = vis.shape[-2:]
    x = pixel_grid(h, wd, dtype=torch.float64).numpy()
    coords = x @ warp[:, :2].T.astype(np.float64) + warp[:, 2]  # ECC maps template (fixed) pixels into the input
    return _from_nominal(coords, tuple(moving.shape[-2:]), tuple(vis.shape[-2:]))


def _elastix(moving, vis, maps):
    import itk

    fixed = itk.GetImageFromArray(np.ascontiguousarray(vis[0].numpy().astype(np.float32)))
    mov = itk.GetImageFromArray(np.ascontiguousarray(_nominal(moving, vis).astype(np.float32)))
    params = itk.ParameterObject.New()
    for m in maps:
        pm = params.GetDefaultParameterMap(m)
        pm["Metric"] = ["AdvancedMattesMutualInformation"]
        pm["RandomSeed"] = ["1234"]  # elastix samples pixels at random
        params.AddParameterMap(pm)
    try:
        _, result = itk.elastix_registration_method(fixed, mov, parameter_object=params, log_to_console=False)
        with tempfile.TemporaryDirectory() as tmp:  # transformix writes the field to a file as well
            tf = itk.TransformixFilter.New(mov)
            tf.SetTransformParameterObject(result)
            tf.SetComputeDeformationField(True)
            tf.SetOutputDirectory(tmp)
            tf.SetLogToConsole(False)
            tf.UpdateLargestPossibleRegion()
            field = itk.GetArrayFromImage(tf.GetOutputDeformationField()).astype(np.float64)
    except RuntimeError:
        field = np.zeros((*vis.shape[-2:], 2))
    x = pixel_grid(*vis.shape[-2:], dtype=torch.float64).numpy()
    return _from_nominal(x + field, tuple(moving.shape[-2:]), tuple(vis.shape[-2:]))


def method_elastix_affine(moving, vis):
    return _elastix(moving, vis, ["affine"])


def method_elastix_bspline(moving, vis):
    return _elastix(moving, vis, ["affine", "bspline"])


def _ivfusion(model: str, estimator: str, **settings) -> Callable:
    def run(moving, vis):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RegistrationWarning)  # low confidence is counted, not printed
            reg = register(moving, vis, model, estimator=estimator,
                           settings=ClassicalSettings(**settings) if settings else None,
                           weights=REGNET_WEIGHTS if estimator != "classical" else None)
        CONFIDENCE.setdefault(run.name, []).append(reg.confidence)
        return reg.mapping()
    return run


#: RegNet weight of the learned estimators (``--regnet``; default: the manifest's).
REGNET_WEIGHTS: Optional[str] = None
#: Confidence of every ivfusion estimate, by method (the low-confidence share goes in the table).
CONFIDENCE: Dict[str, List[float]] = {}


METHODS: Dict[str, Callable] = {
    "none": method_none,
    "opencv-ecc-affine": method_ecc,
    "elastix-affine": method_elastix_affine,
    "elastix-affine+bspline": method_elastix_bspline,
}
for _est in ("classical", "learned", "learned+classical"):
    for _model in ("affine", "homography", "deformable"):
        if _est == "learned" and _model == "deformable":
            continue
        METHODS[f"ivfusion-{_est}-{_model}"] = _ivfusion(_model, _est)
# ablations of the classical estimator
METHODS["ivfusion-classical-deformable (grid search init)"] = _ivfusion("deformable", "classical", init="grid",
                                                                        search_level=1)
METHODS["ivfusion-classical-deformable (MIND-SSC features)"] = _ivfusion("deformable", "classical", features="mind")
# The issue's "reachable" rows: the same estimator registering the infrared camera image to the true
# aligned infrared (one modality) instead of the visible image. What the warp model and the solver can
# do when both images show the same structure everywhere; the gap to the cross-modal rows is what the
# modalities do not share (a flat visible night sky, a bus in one frame only, glare).
for _model in ("homography", "deformable"):
    _mono = _ivfusion(_model, "classical")
    _mono.mono = True
    METHODS[f"ivfusion-classical-{_model} (mono-modal: to the true infrared)"] = _mono
for _name, _fn in METHODS.items():
    _fn.name = _name


def _mean_distance(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean distance of two ``(H, W, 2)`` point maps over ``mask`` (NaN where it is empty)."""
    return float((a - b).norm(dim=-1)[mask].mean()) if bool(mask.any()) else float("nan")


def label_check(natives: Dict[str, Tuple[torch.Tensor, torch.Tensor]]) -> List[dict]:
    """How far each *unwarped* validation pair is from aligned, by two independent features.

    Each pair is registered (``deformable``) once with NGF and once with MIND-SSC features; per pair:
    the mean displacement of each estimate from the dataset's alignment and the mean disagreement of
    the two, on the visible pixels with structure (:func:`structure_mask`). Where the two features
    agree much more closely than either moves, the dataset's alignment (the benchmark's labels) is
    off by about that move: no estimator can score below it against the labels."""
    out = []
    for name, (ir, vis) in natives.items():
        maps = {}
        for features in ("ngf", "mind"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RegistrationWarning)
                reg = register(ir, vis, "deformable", settings=ClassicalSettings(features=features))
            maps[features] = (reg.mapping().double(), reg.confidence)
        mask = structure_mask(vis)
        x = pixel_grid(*vis.shape[-2:], dtype=torch.float64)
        ngf, mind = maps["ngf"][0], maps["mind"][0]
        out.append({"pair": name, "move_ngf": _mean_distance(ngf, x, mask),
                    "move_mind": _mean_distance(mind, x, mask),
                    "ngf_vs_mind": _mean_distance(ngf, mind, mask),
                    "confidence_ngf": maps["ngf"][1], "confidence_mind": maps["mind"][1]})
    return out


def print_label_check(rows: List[dict]) -> None:
    print("\nThe labels: how far the unwarped validation pairs are from aligned (deformable, mean over the "
          "visible pixels with structure; medians over pairs)\n")
    print("| domain | pairs | NGF estimate moves (px) | MIND-SSC estimate moves | NGF vs MIND-SSC | "
          "pairs where both move > 1 px and agree within half the move |")
    print("|---|---:|---:|---:|---:|---:|")
    domains = sorted({r["pair"].rsplit("/", 1)[0] for r in rows})
    for domain in domains + ["all"]:
        rs = [r for r in rows if domain == "all" or r["pair"].rsplit("/", 1)[0] == domain]
        off = [min(r["move_ngf"], r["move_mind"]) > 1 and r["ngf_vs_mind"] < 0.5 * min(r["move_ngf"], r["move_mind"])
               for r in rs]
        print(f"| {domain} | {len(rs)} | {statistics.median([r['move_ngf'] for r in rs]):.2f} | "
              f"{statistics.median([r['move_mind'] for r in rs]):.2f} | "
              f"{statistics.median([r['ngf_vs_mind'] for r in rs]):.2f} | {np.mean(off):.0%} |")


# ------------------------------------------------------------------------------------------ fusion


def _warped(moving: torch.Tensor, coords: torch.Tensor, vis: torch.Tensor) -> np.ndarray:
    """The infrared seen through ``coords``; outside its footprint the visible image (what
    ``fuse(..., align=...)`` feeds the method)."""
    out = sample(moving[None].float(), coords.float())[0]
    inside = inside_mask(coords, tuple(moving.shape[-2:]))
    return torch.where(inside, out, vis).clamp(0, 1)[0].numpy(), inside.numpy()


def fusion_scores(s: Sample, coords: torch.Tensor, method: str) -> Dict[str, float]:
    ir_w, inside = _warped(s.moving, coords, s.vis)
    vis = s.vis[0].numpy()
    fused = ivfusion.fuse(ir_w, vis, method)
    fused = np.where(inside, fused, vis)  # outside the footprint the fused image is the visible one
    scores = evaluate(fused, s.ir[0].numpy(), vis, ["VIF", "Qabf"])
    # the usual reading of Qabf: edges carried over from the images that were fused (blind to ghosts)
    scores["Qabf_inputs"] = evaluate(fused, ir_w, vis, ["Qabf"])["Qabf"]
    return scores


# ------------------------------------------------------------------------------------------ main


def _pct(values: List[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def print_domains(per_pair: List[dict]) -> None:
    """Per-domain medians of every method (``val/roadscene``, ``mixed/msrs``, ...): the datasets'
    own alignment differs (MSRS's pairs are off by 20-45 px, see ``docs/registration.md``), so the
    error against the labels means something else in each."""
    methods = list(dict.fromkeys(r["method"] for r in per_pair))
    domain = {r["pair"]: r["pair"].rsplit("/", 1)[0] for r in per_pair}
    domains = sorted(set(domain.values()))
    count = {d: sum(r["method"] == methods[0] and domain[r["pair"]] == d for r in per_pair) for d in domains}
    print("\nPer domain (pairs): median EPE vs labels / vs own alignment (px), low-confidence share\n")
    print("| method | " + " | ".join(f"{d} ({count[d]})" for d in domains) + " |")
    print("|---|" + "---:|" * len(domains))
    for method in methods:
        cells = []
        for d in domains:
            rs = [r for r in per_pair if r["method"] == method and domain[r["pair"]] == d]
            own = [r["own_epe"] for r in rs if r["own_epe"] is not None]
            conf = [r["confidence"] for r in rs if r["confidence"] is not None]
            cells.append(f"{statistics.median([r['epe'] for r in rs]):.2f}"
                         + (f" / {statistics.median(own):.2f}" if own else "")
                         + (f", {np.mean(np.array(conf) < LOW_CONFIDENCE):.0%}" if conf else ""))
        print(f"| {method} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warps", type=int, default=2, help="warps per validation pair (default 2)")
    parser.add_argument("--limit", type=int, default=None, help="use only N validation pairs (quick runs)")
    parser.add_argument("--domains", nargs="+", default=None, metavar="DOMAIN",
                        help="only these domains' pairs, with their warps of the whole set (e.g. mixed/msrs)")
    parser.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="resize every pair to H x W (e.g. 480 640 for the timing target) instead of <= 640 px")
    parser.add_argument("--methods", nargs="+", default=None, choices=list(METHODS), metavar="METHOD",
                        help=f"default: all of {', '.join(METHODS)}")
    parser.add_argument("--fusion", default="refinefuse", help="fusion method of the quality columns ('' to skip)")
    parser.add_argument("--fusion-methods", nargs="*", default=None,
                        help="registration methods whose fused pairs are scored (default: none, the baselines and "
                             "ivfusion's default); 'aligned' is always added")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every method (default 1)")
    parser.add_argument("--no-reference", action="store_true", help="skip the 'EPE vs own alignment' column")
    parser.add_argument("--regnet", default=None, metavar="WEIGHT",
                        help="RegNet weight of the learned methods (manifest name or .safetensors; default: the manifest's)")
    parser.add_argument("--floor", action="store_true",
                        help="also print the best homography's EPE against the true warps (the homography model's floor)")
    parser.add_argument("--label-check", action="store_true",
                        help="also measure how far the unwarped pairs are from aligned (NGF and MIND-SSC, "
                             "deformable; see label_check)")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per pair")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write every pair's numbers as JSON (a list; with --label-check, "
                             "{\"pairs\": [...], \"label_check\": [...]})")
    args = parser.parse_args()

    global REGNET_WEIGHTS
    REGNET_WEIGHTS = args.regnet
    torch.set_num_threads(args.threads)
    try:
        import cv2
        cv2.setNumThreads(args.threads)
    except ImportError:
        pass
    try:
        import itk
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(args.threads)
    except ImportError:
        pass
    methods = args.methods or list(METHODS)
    from ivfusion.registration import DEFAULT_ESTIMATOR, DEFAULT_MODEL
    default = f"ivfusion-{DEFAULT_ESTIMATOR}-{DEFAULT_MODEL}"
    fusion_methods = args.fusion_methods if args.fusion_methods is not None else [
        m for m in ("none", "opencv-ecc-affine", "elastix-affine", "elastix-affine+bspline", default, "ivfusion-classical-deformable") if m in methods]

    if args.size is not None and min(args.size) < 32:
        parser.error(f"--size: expected H W of at least 32 pixels each, got {args.size}")
    if args.domains is not None:
        known = sorted({name.rsplit("/", 1)[0] for name, _ in validation_pairs()})
        unknown = [d for d in args.domains if d not in known]
        if unknown:
            parser.error(f"--domains: expected some of {', '.join(known)}, got {', '.join(unknown)}")
    samples, natives = build_samples(args.warps, args.limit, tuple(args.size) if args.size else None, args.domains)
    n_lowres = sum(s.truth.ir_size != s.truth.vis_size for s in samples)
    print(f"{len(samples)} warped pairs from {len(natives)} validation pairs ({n_lowres} with a lower-resolution "
          f"infrared); ivfusion {ivfusion.__version__}, torch {torch.__version__}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}\n", file=sys.stderr)

    if args.floor:
        floor = [homography_floor(s) for s in samples]
        print(f"Best homography fitted to the true warps: EPE median {statistics.median(floor):.2f} px, "
              f"p95 {_pct(floor, 95):.2f}, share < 1 px {np.mean(np.array(floor) < 1):.0%}\n")
    # a property of each warped pair's visible image, the same for every method
    structure = {} if args.no_reference else {s.name: structure_mask(s.vis) for s in samples}
    rows = []
    per_pair: List[dict] = []
    fusion: Dict[str, Dict[str, List[float]]] = {}
    if args.fusion:
        aligned = [fusion_scores(s, s.truth.mapping(), args.fusion) for s in samples]
        fusion["perfectly registered"] = {k: [a[k] for a in aligned] for k in ("VIF", "Qabf", "Qabf_inputs")}
    for method in methods:
        fn = METHODS[method]
        mono = getattr(fn, "mono", False)  # registers to the true infrared, not the visible image
        refs = {}
        if not args.no_reference:
            for name, (ir, vis) in natives.items():
                refs[name] = fn(ir, ir if mono else vis)
        epe, cons, cons_s, times, times640 = [], [], [], [], []
        fus = {"VIF": [], "Qabf": [], "Qabf_inputs": []}
        for s in samples:
            t0 = time.perf_counter()
            coords = fn(s.moving, s.ir if mono else s.vis)
            dt = time.perf_counter() - t0
            times.append(dt)
            if tuple(s.vis.shape[-2:]) == (480, 640):
                times640.append(dt)
            e, m = end_point_error(coords, s.truth)
            epe.append(float(e[m].mean()))
            if refs:
                e2, m2 = end_point_error(coords, s.truth, reference=refs[s.name.split("#")[0]])
                cons.append(float(e2[m2].mean()))
                m3 = m2 & structure[s.name]
                cons_s.append(float(e2[m3].mean()) if bool(m3.any()) else float(e2[m2].mean()))
            sc = None
            if args.fusion and method in fusion_methods:
                sc = fusion_scores(s, coords, args.fusion)
                for k in fus:
                    fus[k].append(sc[k])
            conf = CONFIDENCE.get(method, [None])[-1]
            per_pair.append({"method": method, "pair": s.name, "epe": epe[-1], "own_epe": cons[-1] if cons else None,
                             "own_epe_structure": cons_s[-1] if cons_s else None,
                             "seconds": dt, "confidence": conf, "fusion": sc})
            if args.verbose:
                print(f"{method} {s.name} epe {epe[-1]:.2f}" + (f" own {cons[-1]:.2f}" if cons else "")
                      + (f" conf {conf:.2f}" if conf is not None else "") + f" {dt:.2f}s", file=sys.stderr, flush=True)
        if fus["VIF"]:
            fusion[method] = fus
        rows.append((method, epe, cons, cons_s, times, times640))
        print(f"done {method}: median EPE {statistics.median(epe):.2f}", file=sys.stderr, flush=True)

    checked = label_check(natives) if args.label_check else []
    if args.json:
        Path(args.json).write_text(json.dumps({"pairs": per_pair, "label_check": checked} if checked else per_pair,
                                              indent=1))
    print("| method | EPE median (px) | EPE p95 | share < 2 px | own-alignment EPE median | own p95 | own share < 2 px "
          "| own, structure only: median | p95 | s / pair | s / 640x480 pair | low confidence |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method, epe, cons, cons_s, times, times640 in rows:
        own = (f"{statistics.median(cons):.2f} | {_pct(cons, 95):.2f} | {np.mean(np.array(cons) < 2):.0%}"
               if cons else "- | - | -")
        own_s = f"{statistics.median(cons_s):.2f} | {_pct(cons_s, 95):.2f}" if cons_s else "- | -"
        t640 = f"{statistics.median(times640):.2f}" if times640 else "-"
        conf = CONFIDENCE.get(method, [])[-len(epe):]
        low = f"{np.mean(np.array(conf) < LOW_CONFIDENCE):.0%}" if conf else "-"
        print(f"| {method} | {statistics.median(epe):.2f} | {_pct(epe, 95):.2f} | {np.mean(np.array(epe) < 2):.0%} | "
              f"{own} | {own_s} | {statistics.median(times):.2f} | {t640} | {low} |")
    print_domains(per_pair)
    if checked:
        print_label_check(checked)
    if fusion:
        ref = fusion["perfectly registered"]
        print(f"\nFusion with {args.fusion}, scored against the aligned infrared and the visible image (mean over "
              f"{len(samples)} pairs):\n")
        print("| registration | VIF | Qabf | Qabf / perfectly registered | Qabf vs the fused inputs | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, sc in fusion.items():
            ratio = np.mean(sc["Qabf"]) / np.mean(ref["Qabf"])
            ratio_in = np.mean(sc["Qabf_inputs"]) / np.mean(ref["Qabf_inputs"])
            print(f"| {name} | {np.mean(sc['VIF']):.4f} | {np.mean(sc['Qabf']):.4f} | {ratio:.3f} | "
                  f"{np.mean(sc['Qabf_inputs']):.4f} | {ratio_in:.3f} |")


if __name__ == "__main__":
    main()
