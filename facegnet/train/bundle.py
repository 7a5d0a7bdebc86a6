"""Pack training folders into zip shards small enough to carry to a GPU machine, and unpack them there.

    python -m facegnet.train.bundle pack --source pack=../shared/data/train \\
        --source fairface=data/extra/fairface --source utkface=data/extra/utkface \\
        --out .carry/faces --quality 60 --max-mib 60
    python -m facegnet.train.bundle unpack .carry/faces data/bundle     # on the GPU machine

A source is a training pack (``manifest.csv`` with identity/split columns, ``dev_pairs.csv``, teacher arrays)
or a ``facegnet prepare`` folder. Each lands in ``<out>/<name>/`` of the unpacked tree, so the trainer reads it
as before (``--data data/bundle/pack --extra-data data/bundle/fairface,...``). Crops that are not WebP yet
(``prepare`` writes lossless PNG, ~14 kB a face) are re-encoded as WebP at ``--quality`` (~0.9 kB at 60) and
the manifest and pair lists are rewritten to match; WebP crops are copied as they are. Shards are stored zip
files (the crops are compressed already) of at most ``--max-mib`` each, filled in a fixed order.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import zipfile
from pathlib import Path

from PIL import Image

from facegnet.errors import DataError, named_paths, one_line_errors

KEEP_SUFFIX = ".webp"
#: Tables whose ``crop``-like columns name crop files (rewritten when crops are re-encoded).
CROP_TABLES = {"manifest.csv": ("crop",), "dev_pairs.csv": ("a", "b")}
#: Other files of a source that travel with it (teacher arrays, notes); anything else stays behind.
TABLE_SUFFIXES = (".npy", ".json", ".txt", ".md")
ZIP_ENTRY_OVERHEAD = 128  # bytes of headers per stored entry (local + central), rounded up


def _new_name(name: str) -> str:
    return name if name.lower().endswith(KEEP_SUFFIX) else str(Path(name).with_suffix(KEEP_SUFFIX))


def _rewrite_table(path: Path, columns: tuple[str, ...]) -> bytes:
    """The CSV with crop names in ``columns`` pointing at their WebP versions; byte for byte the file when they all
    do already (stored teacher targets name the manifest by its sha256)."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        rows = list(reader)
    if all(_new_name(row[column]) == row[column] for row in rows for column in columns if row.get(column)):
        return path.read_bytes()
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        for column in columns:
            if row.get(column):
                row[column] = _new_name(row[column])
        writer.writerow(row)
    return out.getvalue().encode()


def _crop_names(root: Path) -> list[str]:
    """Every crop the source's manifest lists (relative paths), in manifest order."""
    path = root / "manifest.csv"
    if not path.exists():
        raise DataError("no manifest.csv (not a training pack or prepare folder)", root)
    with open(path, newline="") as handle:
        return [row["crop"] for row in csv.DictReader(handle) if row.get("crop")]


def _entries(name: str, root: Path, quality: int):
    """(archive name, bytes, is a crop) of one source: its tables and arrays, then its crops."""
    for path in sorted(p for p in root.iterdir() if p.is_file()):
        if path.name in CROP_TABLES:
            yield f"{name}/{path.name}", _rewrite_table(path, CROP_TABLES[path.name]), False
        elif path.suffix in TABLE_SUFFIXES:
            yield f"{name}/{path.name}", path.read_bytes(), False
    for rel in _crop_names(root):
        path = root / rel
        try:
            if rel.lower().endswith(KEEP_SUFFIX):
                data = path.read_bytes()
            else:
                with Image.open(path) as image:
                    buffer = io.BytesIO()
                    image.convert("RGB").save(buffer, "WEBP", quality=quality, method=6)
                data = buffer.getvalue()
        except FileNotFoundError:
            raise DataError("crop listed in manifest.csv is missing", path) from None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read or re-encode crop ({exc.__class__.__name__})", path) from None
        yield f"{name}/{_new_name(rel)}", data, True


def pack(sources: dict[str, Path], out: Path, quality: int = 60, max_mib: float = 60.0) -> dict:
    """Write ``out/faces-NNN.zip`` shards (each ≤ ``max_mib``) and ``out/index.json``; returns the index."""
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be 1–100, not {quality}")
    limit = int(max_mib * 2**20)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder ({exc.strerror})", out) from None
    for old in out.glob("faces-*.zip"):
        old.unlink()
    shards: list[dict] = []
    zf, size = None, 0
    counts = {}
    try:
        for name, root in sources.items():
            if not Path(root).is_dir():
                raise DataError("source folder not found", root)
            counts[name] = 0
            for arcname, data, is_crop in _entries(name, Path(root), quality):
                need = len(data) + len(arcname) * 2 + ZIP_ENTRY_OVERHEAD
                if need > limit:
                    raise DataError(f"{arcname} alone is larger than --max-mib", root)
                if zf is None or size + need > limit:
                    if zf is not None:
                        zf.close()
                    path = out / f"faces-{len(shards):03d}.zip"
                    zf, size = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED), 22  # end-of-directory record
                    shards.append({"file": path.name, "entries": 0})
                zf.writestr(arcname, data)
                size += need
                shards[-1]["entries"] += 1
                counts[name] += is_crop
    finally:
        if zf is not None:
            zf.close()
    for shard in shards:
        shard["bytes"] = (out / shard["file"]).stat().st_size
    index = {"sources": {n: {"folder": str(sources[n]), "crops": c} for n, c in counts.items()},
             "quality": quality, "shards": shards}
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    return index


def unpack(folder: Path, dest: Path) -> dict:
    """Extract every shard ``folder`` holds into ``dest``; returns the files extracted per source."""
    shards = sorted(Path(folder).glob("faces-*.zip"))
    if not shards:
        raise DataError("no faces-*.zip shards here", folder)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the destination ({exc.strerror})", dest) from None
    counts: dict[str, int] = {}
    for shard in shards:
        try:
            with zipfile.ZipFile(shard) as zf:
                for info in zf.infolist():
                    # Refuse paths that would leave dest (a shard is data from elsewhere).
                    target = (dest / info.filename).resolve()
                    if dest.resolve() not in target.parents:
                        raise DataError(f"entry {info.filename!r} points outside the destination", shard)
                    zf.extract(info, dest)
                    source = info.filename.split("/", 1)[0]
                    counts[source] = counts.get(source, 0) + 1
        except zipfile.BadZipFile:
            raise DataError("not a zip file (a shard cut short?)", shard) from None
        except OSError as exc:  # a full disk, a read-only destination
            raise DataError(f"cannot extract ({exc.strerror or exc.__class__.__name__})", shard) from None
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facegnet.train.bundle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="zip training folders into shards")
    p.add_argument("--source", action="append", default=[], metavar="NAME=FOLDER", help="a pack or prepare folder")
    p.add_argument("--out", required=True, help="folder for faces-NNN.zip and index.json")
    p.add_argument("--quality", type=int, default=60, help="WebP quality for re-encoded crops (default: 60)")
    p.add_argument("--max-mib", type=float, default=60.0, help="largest shard in MiB (default: 60)")
    u = sub.add_parser("unpack", help="extract the shards of a folder")
    u.add_argument("folder")
    u.add_argument("dest")
    args = parser.parse_args(argv)

    def run() -> int:
        if args.command == "pack":
            sources = named_paths(args.source, "--source")
            print(json.dumps(pack(sources, Path(args.out), args.quality, args.max_mib)))
        else:
            print(json.dumps(unpack(Path(args.folder), Path(args.dest))))
        return 0

    return one_line_errors(run)

if __name__ == "__main__":
    raise SystemExit(main())
