#!/usr/bin/env python3
"""Identification on LFW as a user meets it; writes benchmarks/results/lfw_identification.{json,md}.

- Enrolment: one photo of every LFW person with at least two photos (the first whose largest face passes
  the gallery's enrolment quality rule: shorter side >= 40 px, detection score >= 0.95), into a fresh
  gallery with the default index (``auto``).
- Genuine probes: every other photo of those people (the face nearest the image centre: LFW labels the
  central person). Closed-set identification: rank-1 and rank-5 accuracy.
- Impostor probes: the people with a single photo, who are not enrolled. Open-set identification: the
  detection-and-identification rate (DIR: rank-1 correct and similarity >= t) and the share of strangers
  named (FAR) at the gallery's default threshold, chosen from the model card's dev impostor tail for a
  false-alarm rate per search (``--search-far``, default 1%) at the number of templates enrolled (here one
  per person); the same at
  other per-search rates, at the card's fixed thresholds, and (for reference, tuned on LFW itself) at the
  threshold where 1% of these impostors are accepted.

    python benchmarks/lfw_identification.py [--weights W] [--data ../shared/data/lfw] [--limit N]

``--limit N`` keeps the first N people of each group (a quick check). ``--scores FILE`` keeps the probes' scores
(which depend on the weights, the photos and the detections, not on any threshold) in a .npz file, and when it
exists makes the report from it without embedding again. LFW is used for evaluation only.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from host_info import cpu_model

from facegnet.card import resolve_card
from facegnet.gallery import Gallery, QualityPolicy
from facegnet.gallery.search_threshold import DEFAULT_SEARCH_FAR, SearchThreshold, given_threshold, search_threshold

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "lfw"
#: Other per-search false-alarm rates whose thresholds are reported beside the default's.
OTHER_RATES = (0.001, 0.002, 0.005, 0.02, 0.05)


def people_photos(images: Path) -> dict[str, list[Path]]:
    """Every person's photos, sorted, from LFW's ``images/<Name>/<Name>_NNNN.jpg`` layout."""
    out = {}
    for folder in sorted(p for p in images.iterdir() if p.is_dir()):
        photos = sorted(folder.glob("*.jpg"))
        if photos:
            out[folder.name] = photos
    return out


def far_threshold(impostor_scores: np.ndarray, far: float) -> float:
    """Smallest threshold accepting at most ``far`` of the impostors (score >= t accepts)."""
    scores = np.sort(impostor_scores)[::-1]
    allowed = int(np.floor(far * len(scores)))
    if allowed >= len(scores):
        return float(scores[-1])
    return float(np.nextafter(scores[allowed], np.float32(np.inf)))  # just above the first rejected score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=None, help="model card or weights (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LFW directory (with images/)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N people of each group")
    parser.add_argument("--far", type=float, default=0.01, help="false-accept rate for the open-set DIR")
    parser.add_argument("--search-far", type=float, default=DEFAULT_SEARCH_FAR,
                        help="per-search false-alarm rate of the gallery's default threshold (as identify --far)")
    parser.add_argument("--chunk", type=int, default=64, help="images embedded together")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "lfw_identification")
    parser.add_argument("--detection-cache", type=Path, default=None, metavar="FILE",
                        help="reuse MTCNN detections kept in this SQLite file (see facegnet eval --detection-cache)")
    parser.add_argument("--scores", type=Path, default=None, metavar="FILE.npz",
                        help="keep the probes' scores here; when the file exists, report from it without embedding")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    if args.scores is not None and args.scores.exists():
        saved = np.load(args.scores, allow_pickle=False)
        measured = json.loads(str(saved["report"]))
        gen_scores, imp_scores, correct1 = saved["gen"], saved["imp"], saved["correct1"]
    else:
        measured, gen_scores, imp_scores, correct1 = measure(args)
        if args.scores is not None:
            np.savez(args.scores, gen=gen_scores, imp=imp_scores, correct1=correct1, report=json.dumps(measured))
    # The card of identify's default procedure (flip, fp32), as the gallery's recogniser has it.
    card = resolve_card(args.weights).for_procedure(True, "fp32")
    command = ("python benchmarks/lfw_identification.py" + (f" --limit {args.limit}" if args.limit else "")
               + (f" --weights {args.weights}" if args.weights else "")
               + (f" --search-far {args.search_far:g}" if args.search_far != DEFAULT_SEARCH_FAR else "")
               + (f" --detection-cache {args.detection_cache}" if args.detection_cache else "")
               + (f" --scores {args.scores}" if args.scores else ""))
    report = {"command": command, **measured, "cpu": cpu_model(),
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    report.update(open_set(card, measured["enrolled_people"], gen_scores, imp_scores, correct1, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def in_force(card, people: int, far: float, templates: int) -> SearchThreshold:
    """The threshold a gallery of ``people`` enrolled from ``templates`` photos uses by default (what
    Gallery.search_threshold computes)."""
    if card.impostor_tail:
        return search_threshold(card.impostor_tail, people, far, templates)
    return given_threshold(None, people, card.open_set_threshold, "card", templates)


def open_set(card, people: int, gen_scores: np.ndarray, imp_scores: np.ndarray, correct1: np.ndarray,
             args: argparse.Namespace) -> dict:
    """Strangers named and DIR at the default threshold, at other per-search rates and at fixed thresholds."""
    if not len(imp_scores) or not len(gen_scores):
        return {}

    def rates(t: float) -> dict:
        return {"threshold": round(float(t), 4), "strangers_named": float((imp_scores >= t).mean()),
                "dir": float((correct1 & (gen_scores >= t)).mean())}

    templates = people  # one photo of each person is enrolled
    default = in_force(card, people, args.search_far, templates)
    out: dict = {"default_threshold": {**default.to_dict(), **rates(default.threshold)}}
    out["per_search_rates"] = [{"far_per_search": rate, **rates(t.threshold)}
                               for rate in OTHER_RATES if (t := in_force(card, people, rate, templates)).far_per_search]
    t_far = far_threshold(imp_scores, args.far)
    t_card, t_open = float(card.threshold), card.open_set_threshold
    out["open_set"] = {
        "far_target": args.far,
        "threshold_at_far": t_far,
        "far_at_threshold": float((imp_scores >= t_far).mean()),
        "dir_at_far": float((correct1 & (gen_scores >= t_far)).mean()),
        "card_threshold": t_card,
        "dir_at_card_threshold": float((correct1 & (gen_scores >= t_card)).mean()),
        "far_at_card_threshold": float((imp_scores >= t_card).mean()),
        "card_identify_threshold": t_open,
        "dir_at_card_identify_threshold": float((correct1 & (gen_scores >= t_open)).mean()),
        "far_at_card_identify_threshold": float((imp_scores >= t_open).mean()),
    }
    return out


def measure(args: argparse.Namespace) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """Enrol, embed the probes and search: the report's measured part, the genuine and impostor probes' best
    scores, and whether each genuine probe's best candidate is right."""
    from facegnet.recognizer import FaceRecognizer

    started = time.time()
    rec = FaceRecognizer(args.weights, detection_cache=args.detection_cache)
    quality = QualityPolicy()
    people = people_photos(args.data / "images")
    multi = [name for name, photos in people.items() if len(photos) >= 2]
    single = [name for name, photos in people.items() if len(photos) == 1]
    if args.limit:
        multi, single = multi[: args.limit], single[: args.limit]
    progress = not args.quiet

    # Enrolment: each person's first photo whose largest face passes the quality rule, keeping one probe.
    enrol_photo: dict[str, Path] = {}
    enrol_skips: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        gallery = Gallery(Path(tmp) / "gallery", recognizer=rec, create=True)
        attempt = 0
        pending = list(multi)
        while pending:
            batch = [(n, people[n][attempt]) for n in pending if attempt < len(people[n]) - 1]
            if not batch:
                break
            results = rec.embed_images([p for _, p in batch], select="largest", chunk=args.chunk,
                                       progress=f"enrolment round {attempt + 1}" if progress else False)
            pending, accepted = [], []
            for (name, photo), result in zip(batch, results):
                why = result.error or (quality.check(result.face) if result.face is not None else "no face")
                if why:
                    enrol_skips.append({"photo": str(photo), "reason": why})
                    pending.append(name)
                    continue
                accepted.append((name, photo, result.embedding))
                enrol_photo[name] = photo
            if accepted:
                gallery.add_embeddings([n for n, _, _ in accepted], np.stack([e for _, _, e in accepted]),
                                       sources=[str(p) for _, p, _ in accepted])
            attempt += 1
        not_enrolled = [n for n in multi if n not in enrol_photo]

        # Probes: the central face of every other photo of enrolled people, and of the one-photo people.
        genuine = [(n, p) for n in multi if n in enrol_photo for p in people[n] if p != enrol_photo[n]]
        impostor = [(n, people[n][0]) for n in single]
        probes = genuine + impostor
        results = rec.embed_images([p for _, p in probes], select="center", chunk=args.chunk,
                                   progress="probes" if progress else False)
        ok = [i for i, r in enumerate(results) if r.ok]
        matches = gallery.search(np.stack([results[i].embedding for i in ok]), top_k=5, threshold=-2.0) if ok else []
        by_probe = dict(zip(ok, matches))
        gallery.close()

    n_genuine = len(genuine)
    top1 = np.full(len(probes), "", dtype=object)
    top5: list[list[str]] = [[] for _ in probes]
    score = np.full(len(probes), -np.inf)
    for i, match in by_probe.items():
        top1[i] = match.candidates[0].name
        top5[i] = [c.name for c in match.candidates]
        score[i] = match.similarity
    truth = np.array([n for n, _ in probes], dtype=object)
    correct1 = top1[:n_genuine] == truth[:n_genuine]  # a probe without a face counts as a miss
    correct5 = np.array([truth[i] in top5[i] for i in range(n_genuine)], dtype=bool)
    gen_scores, imp_scores = score[:n_genuine], score[n_genuine:]
    no_face = {"genuine": int(sum(not results[i].ok for i in range(n_genuine))),
               "impostor": int(sum(not results[i].ok for i in range(n_genuine, len(probes))))}

    report: dict = {
        "model": rec.card.name,
        "fingerprint": rec.fingerprint,
        "trained": rec.card.trained,
        "data": str(args.data),
        "protocol": "enroll one photo of each LFW person with >= 2 photos; probe with their other photos "
                    "(closed set); the people with one photo are impostors (open set)",
        "enrolled_people": len(enrol_photo),
        "not_enrolled": {"people": len(not_enrolled), "names": not_enrolled[:50]},
        "enrolment_skips": len(enrol_skips),
        "genuine_probes": n_genuine,
        "impostor_probes": len(impostor),
        "probes_without_face": no_face,
        "closed_set": {
            "rank1": float(correct1.mean()) if n_genuine else None,
            "rank5": float(correct5.mean()) if n_genuine else None,
        },
        "seconds": round(time.time() - started, 1),
    }
    return report, gen_scores, imp_scores, correct1


def markdown(r: dict) -> str:
    lines = [
        "# LFW identification",
        "",
        f"Command: `{r['command']}`; model {r['model']} ({r['fingerprint'][:12]}"
        + ("" if r["trained"] else ", untrained: near chance") + f"); {r['seconds']} s on {r.get('cpu', '?')}, "
        f"{r.get('date', '?')}.",
        "",
        f"Protocol: {r['protocol']}.",
        "",
        f"- enrolled people: {r['enrolled_people']} (not enrolled, no usable photo: {r['not_enrolled']['people']})",
        f"- genuine probes: {r['genuine_probes']}, impostor probes: {r['impostor_probes']} "
        f"(no face found: {r['probes_without_face']['genuine']} genuine, {r['probes_without_face']['impostor']} "
        "impostor; counted as misses / rejections)",
        f"- closed-set rank-1: {fmt(r['closed_set']['rank1'])}, rank-5: {fmt(r['closed_set']['rank5'])}",
    ]
    if "default_threshold" in r:
        d = r["default_threshold"]
        target = "" if d["far_per_search"] is None else f" for {d['far_per_search']:.2%} of searches by a stranger"
        lines += [
            f"- **at the default threshold {d['threshold']:.4f}** ({d['source']}{target} with {d['people']} people, "
            f"from the model card's dev impostor tail): **strangers named {fmt(d['strangers_named'])}**, "
            f"DIR {fmt(d['dir'])}",
        ]
        for row in r.get("per_search_rates", []):
            lines.append(f"- threshold {row['threshold']:.4f} for {row['far_per_search']:.2%} per search (`--far "
                         f"{row['far_per_search']:g}`): strangers named {fmt(row['strangers_named'])}, "
                         f"DIR {fmt(row['dir'])}")
    if "open_set" in r:
        o = r["open_set"]
        lines += [
            f"- open-set DIR at FAR {o['far_target']:.0%}: {fmt(o['dir_at_far'])} (threshold "
            f"{o['threshold_at_far']:.4f}, chosen on these impostors: for reference only; measured FAR "
            f"{fmt(o['far_at_threshold'])})",
            f"- at the model card's verification threshold {o['card_threshold']:.4f}: DIR "
            f"{fmt(o['dir_at_card_threshold'])}, FAR {fmt(o['far_at_card_threshold'])}",
        ]
        if "card_identify_threshold" in o:
            lines.append(f"- at the card's fixed identification threshold {o['card_identify_threshold']:.4f} (per-pair "
                         f"FAR 1e-3, `identify`'s default before): DIR {fmt(o['dir_at_card_identify_threshold'])}, "
                         f"FAR {fmt(o['far_at_card_identify_threshold'])}")
    return "\n".join(lines) + "\n"


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


if __name__ == "__main__":
    main()
