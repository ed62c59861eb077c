"""Gather the real photographs vtok's default model is trained and evaluated on.

About 1,000+ distinct real photos from Debian packages (wallpapers, educational software,
TeX documentation, a planetarium), de-duplicated with a perceptual hash (mirrors included),
split by photo into train / held-out with a fixed seed. Which files are kept is fixed by the
committed manifest scripts/photo_manifest.txt (made once from the rules in SOURCES below plus a
look at contact sheets); ``--rebuild-manifest`` regenerates it from the rules alone. The images
are not committed (their licences: CC-BY, CC-BY-SA, CC0, GPL, LGPL, per file; see each
package's debian/copyright and docs/data.md).

    python scripts/gather_photos.py data/photos                   # packages are cached in data/debs
    python scripts/gather_photos.py data/photos --sheets /tmp/cs  # contact sheets of the candidates

Writes data/photos/train/<source>/<name>.jpg (shorter side <= 384, JPEG), data/photos/heldout/
<source>/<name>.png (shorter side <= 384) and data/photos/heldout/samples/*.png (scikit-image's
sample photos), and data/photos/sources_heldout/<source>/ (whole sources held out from training
recipes, both splits, with the samples: SOURCES_HELDOUT). Cut-outs with transparency are composited on crops of real photos (train
backgrounds for train cut-outs, held-out backgrounds for held-out ones), never on a flat colour.
Idempotent (existing outputs are kept) and deterministic (fixed seeds).
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import random
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Path(__file__).resolve().parent / "photo_manifest.txt"
SHORT_SIDE = 384
JPEG_QUALITY = 88  # 90 gave 40.6 MB of training JPEGs; 88 keeps them under the 40 MB budget
MIN_CUTOUT = 64  # cut-outs whose object is smaller than this on its short side are dropped
# Two images are the same photo when both 64-bit hashes (pHash, dHash) are this close (Hamming distance).
# pHash alone confuses dark frames with one bright blob (galaxies, a fruit on black); dHash tells them apart.
DUP_DIST = (6, 10)
GROUP_DIST = (10, 16)  # looser: look-alikes this close never straddle the train / held-out split
HELDOUT_FRACTION = 0.09
# Whole sources held out from training recipes (data/photos/sources_heldout, see docs/data.md): every
# photo of these sources, both splits, plus the sample photos no vtok model has trained on. Recipes
# are chosen on this set, because photos held out *within* the training sources did not predict
# strangers' photos. Everyday scenes (people, beach, snow), landscapes and food, textures, portraits.
SOURCES_HELDOUT = ("kphotoalbum", "texlive", "tuxpaint_templates", "gramps")
MIN_HELDOUT = 5
SEED = 1234

# ---------------------------------------------------------------------------------------------
# Wallpapers: the fixed, checked-by-eye lists (photos only, one size each).
WALLPAPER_PACKAGES = [
    "mate-backgrounds",
    "lxqt-themes",
    "plasma-workspace-wallpapers",
    "lomiri-wallpapers-16.04",
    "lomiri-wallpapers-20.04",
]
M, L, K, U = (
    "/usr/share/backgrounds/mate/nature/",
    "/usr/share/lxqt/wallpapers/",
    "/usr/share/wallpapers/",
    "/usr/share/backgrounds/",
)
TRAIN = [
    M + "Aqua.jpg",
    M + "Blinds.jpg",
    M + "Dune.jpg",
    M + "Garden.jpg",
    M + "GreenMeadow.jpg",
    M + "LadyBird.jpg",
    M + "RainDrops.jpg",
    M + "TwoWings.jpg",
    M + "Wood.jpg",
    M + "YellowFlower.jpg",
    L + "Butterfly-Kenneth-Wimer.jpg",
    L + "Valendas.png",
    L + "after-the-rain.jpg",
    L + "appleflower.png",
    L + "butterfly.png",
    L + "cloud.png",
    L + "drop.png",
    L + "flowers.png",
    L + "fog.jpg",
    L + "this-is-not-windows.jpg",
    K + "BytheWater/contents/images/2560x1600.jpg",
    K + "ColdRipple/contents/images/2560x1600.jpg",
    K + "DarkestHour/contents/images/2560x1600.jpg",
    K + "EveningGlow/contents/images/2560x1600.jpg",
    K + "FallenLeaf/contents/images/2560x1600.jpg",
    K + "Grey/contents/images/2560x1600.jpg",
    K + "Kite/contents/images/2560x1600.jpg",
    K + "OneStandsOut/contents/images/2560x1600.jpg",
    K + "summer_1am/contents/images/2560x1600.jpg",
    U + "Dragonfly_by_Bolly.jpg",
    U + "Picture_0B_by_freespace.jpg",
    U + "Picture_1A_by_freespace.jpg",
    U + "aitzgorri_by_Aitzol_Berasategi.jpg",
    U + "analogpattern_by_Peter_Nerlich.jpg",
    U + "free_by_Peter_Nerlich.jpg",
    U + "friends_by_Aitzol_Berasategi.jpg",
    U + "greentock_by_Peter_Nerlich.jpg",
    U + "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    U + "seeding_by_Clements_Engelhardt.jpg",
]
HELDOUT = [
    M + "FreshFlower.jpg",
    M + "Storm.jpg",
    L + "beam.png",
    K + "ColorfulCups/contents/images/2560x1600.jpg",
    K + "Path/contents/images/2560x1600.jpg",
    U + "Bridge_by_Sander_Klootwijk.jpg",
    U + "Wine_by_Jakkub_Mede.jpg",
    U + "life_by_Aitzol_Berasategi.jpg",
    U + "sunset_by_Aitzol_Berasategi.jpg",
    U + "Kleiber_by_Lukas_Baubkus.jpg",
]
WALLPAPER_OWNER = {M: "mate-backgrounds", L: "lxqt-themes", K: "plasma-workspace-wallpapers"}


def wallpaper_package(path: str, cache: Path) -> str:
    for prefix, pkg in WALLPAPER_OWNER.items():
        if path.startswith(prefix):
            return pkg
    for pkg in ("lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04"):  # both install into U
        if (cache / pkg / path.lstrip("/")).is_file():
            return pkg
    return "lomiri-wallpapers-20.04"


# ---------------------------------------------------------------------------------------------
# The other sources: package, globs inside it (an ``X.rcc!`` prefix reads inside a Qt resource
# file), and exclusions. These rules give the candidates; the manifest records those kept by eye.
@dataclass
class Source:
    package: str
    include: list[str]
    exclude: list[str] = field(default_factory=list)
    min_short: int = 0  # full-frame photos smaller than this are not candidates
    limit: int = 0  # at most this many (a seeded sample), 0 = all
    limit_glob: str = "*"  # ... of the candidates that match this glob


GC = "usr/share/gcompris-qt/rcc/"
TS = "usr/share/tuxpaint/stamps/"
SC = "usr/share/scratch/Media/"
SOURCES: dict[str, Source] = {
    "gcompris": Source(
        "gcompris-qt-data",
        [
            *(
                GC + f"{a}.rcc!*.webp"
                for a in (
                    "categorization",
                    "explore_monuments",
                    "erase",
                    "explore_world_animals",
                    "explore_farm_animals",
                    "explore_world_music",
                    "leftright",
                    "louis-braille",
                )
            ),
            GC + "details.rcc!*_background.webp",
            GC + "clickgame.rcc!*/sea*.webp",
        ],
    ),
    "tuxpaint_stamps": Source(
        "tuxpaint-stamps-default",
        [TS + "**.png"],
        ["*cartoon*", "*_mirror*", "*/symbols/*", "*/town/flags/*", "*/town/roadsigns/*", "*/fantasy/*"],
    ),
    "qabcs": Source(
        "qabcs-data",
        [f"usr/share/qabcs/abcs/all/pics/{d}/*.png" for d in ("animals", "food", "instrument", "toys", "misc")],
    ),
    "scratch": Source(
        "scratch",
        [SC + "Backgrounds/*/*.jpg"]
        + [
            SC + f"Costumes/{d}/*.{e}"
            for d in ("People", "Animals", "Things", "Transportation")
            for e in ("png", "gif", "jpg")
        ],
    ),
    "kalzium": Source("kalzium-data", ["usr/share/kalzium/data/toolpics/*"]),
    "kphotoalbum": Source("kphotoalbum", ["usr/share/kphotoalbum/demo/*.jpg"], ["*qt-logo*", "*/CategoryImages/*"]),
    "tuxpaint_templates": Source("tuxpaint-data", ["usr/share/tuxpaint/templates/*.jpg"]),
    "gramps": Source(
        "gramps",
        ["usr/share/doc/gramps/example/gramps/*.jpg", "usr/share/doc/gramps/example/gramps/*.png"],
        ["*scanned_microfilm*"],
    ),
    "texlive": Source(
        "texlive-latex-extra-doc texlive-publishers-doc texlive-pictures-doc",
        ["usr/share/doc/texlive-doc/**.jpg", "usr/share/doc/texlive-doc/**.jpeg", "usr/share/doc/texlive-doc/**.JPG"],
        min_short=256,
    ),
    "stellarium": Source(
        "stellarium-data",
        ["usr/share/stellarium/nebulae/default/*.png", "usr/share/stellarium/landscapes/*/*.png"],
        [
            "*/jupiter/*",
            "*/saturn/*",
            "*/uranus/*",
            "*/neptune/*",
            "*/sun/*",
            "*/trees/*",
            "*fog*",
            "*illum*",
            "*-lgt*",
        ],
        limit=48,
        limit_glob="*/nebulae/*",
    ),
}
PACKAGES = sorted({p for s in SOURCES.values() for p in s.package.split()} | set(WALLPAPER_PACKAGES))


# ---------------------------------------------------------------------------------------------
# Packages: apt-get download + dpkg-deb -x into the cache.
def ensure_packages(cache: Path, names: list[str]) -> None:
    missing = [n for n in names if not (cache / n / ".unpacked").exists()]
    if not missing:
        return
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            sys.exit(
                f"gather_photos: {tool} is not available; unpack these Debian packages into {cache}/NAME/: {' '.join(missing)}"
            )
    debs = cache / "_deb"
    debs.mkdir(parents=True, exist_ok=True)
    for name in missing:
        found = sorted(debs.glob(f"{name}_*.deb"))
        if not found:
            print(f"apt-get download {name}", flush=True)
            r = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
            if r.returncode != 0:
                subprocess.run(["apt-get", "update", "-qq"], check=False)
                r = subprocess.run(["apt-get", "download", name], cwd=debs, capture_output=True, text=True)
            found = sorted(debs.glob(f"{name}_*.deb"))
            if r.returncode != 0 or not found:
                sys.exit(
                    f"gather_photos: apt-get download {name} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
                )
        print(f"unpacking {found[-1].name}", flush=True)
        subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(cache / name)], check=True)
        (cache / name / ".unpacked").touch()


# ---------------------------------------------------------------------------------------------
# A small reader of Qt resource (.rcc) files.
def read_rcc(path: Path) -> dict[str, tuple[int, int]]:
    """Map each file inside the resource to (flags, offset of its data record)."""
    buf = path.read_bytes()
    if buf[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource file")
    version, tree, data, names = struct.unpack(">4I", buf[4:20])
    node_size = 14 if version < 2 else 22

    def name(off: int) -> str:
        (n,) = struct.unpack(">H", buf[names + off : names + off + 2])
        return buf[names + off + 6 : names + off + 6 + 2 * n].decode("utf-16-be")

    out: dict[str, tuple[int, int]] = {}

    def walk(index: int, prefix: str) -> None:
        p = tree + index * node_size
        name_off, flags = struct.unpack(">IH", buf[p : p + 6])
        here = prefix + "/" + name(name_off) if index else ""
        if flags & 2:
            count, first = struct.unpack(">II", buf[p + 6 : p + 14])
            for child in range(first, first + count):
                walk(child, here)
        else:
            (off,) = struct.unpack(">I", buf[p + 10 : p + 14])
            out[here.lstrip("/")] = (flags, data + off)

    walk(0, "")
    return out


def rcc_bytes(path: Path, inner: str, _cache: dict = {}) -> bytes:  # noqa: B006 (a deliberate memo)
    if path not in _cache:
        _cache.clear()
        _cache[path] = (path.read_bytes(), read_rcc(path))
    buf, index = _cache[path]
    flags, off = index[inner]
    (size,) = struct.unpack(">I", buf[off : off + 4])
    raw = buf[off + 4 : off + 4 + size]
    if flags & 4:
        raise ValueError(f"{path}!{inner}: zstd-compressed resources are not supported")
    return zlib.decompress(raw[4:]) if flags & 1 else raw


# ---------------------------------------------------------------------------------------------
# Candidates (rules) and the manifest.
def _match(path: str, globs: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(path, g) or fnmatch.fnmatchcase("/" + path, g) for g in globs)


def candidates(cache: Path) -> list[tuple[str, str, str]]:
    rows = [("wallpapers", wallpaper_package(p, cache), p.lstrip("/")) for p in TRAIN + HELDOUT]
    for src, s in SOURCES.items():
        found: list[tuple[str, str]] = []
        for pkg in s.package.split():
            base = cache / pkg
            for g in s.include:
                if "!" in g:
                    rcc, inner = g.split("!")
                    for f in sorted(read_rcc(base / rcc)):
                        if fnmatch.fnmatchcase(f, inner) and not _match(f, s.exclude):
                            found.append((pkg, f"{rcc}!{f}"))
                    continue
                root = g.split("*")[0]
                root_dir = base / root if root.endswith("/") else (base / root).parent
                for f in sorted(root_dir.rglob("*")):
                    rel = f.relative_to(base).as_posix()
                    if f.is_file() and fnmatch.fnmatchcase(rel, g) and not _match(rel, s.exclude):
                        found.append((pkg, rel))
        found = sorted(set(found))
        if src == "tuxpaint_stamps":  # a PNG next to an SVG of the same name is a drawing
            found = [(p, f) for p, f in found if not (cache / p / f).with_suffix(".svg").exists()]
        if s.min_short:
            keep = []
            for p, f in found:
                with Image.open(cache / p / f) as im:
                    if min(im.size) >= s.min_short:
                        keep.append((p, f))
            found = keep
        if s.limit:
            limited = [x for x in found if fnmatch.fnmatchcase(x[1], s.limit_glob)]
            if len(limited) > s.limit:
                drop = set(limited) - set(random.Random(SEED).sample(limited, s.limit))
                found = [x for x in found if x not in drop]
        rows += [(src, p, f) for p, f in found]
    return rows


def read_manifest(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            src, pkg, rel = line.split("\t")
            rows.append((src, pkg, rel))
    return rows


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> None:
    head = (
        "# Photos kept by scripts/gather_photos.py: source<TAB>Debian package<TAB>path inside the package\n"
        "# (an .rcc! path is a file inside a Qt resource file). Made from the script's rules plus a look at\n"
        "# contact sheets of every candidate; regenerate from the rules alone with --rebuild-manifest.\n"
    )
    path.write_text(head + "".join(f"{s}\t{p}\t{r}\n" for s, p, r in rows))


def load(cache: Path, pkg: str, rel: str, draft: int = 0) -> Image.Image:
    if "!" in rel:
        rcc, inner = rel.split("!")
        im = Image.open(io.BytesIO(rcc_bytes(cache / pkg / rcc, inner)))
    else:
        im = Image.open(cache / pkg / rel)
    if draft and im.format == "JPEG":
        im.draft("RGB", (draft, draft))
    if im.mode in ("P", "PA", "LA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode not in ("RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in im.getbands() or "transparency" in im.info else "RGB")
    im.load()
    return im


def short_resize(im: Image.Image, short: int) -> Image.Image:
    if min(im.size) <= short:
        return im
    s = short / min(im.size)
    return im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------------
# Perceptual hashes: 64-bit DCT pHash and 64-bit dHash, of the image and of its mirror.
def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)
    return np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))


_D32 = _dct_matrix(32)


def phash(grey32: np.ndarray) -> int:
    c = _D32 @ grey32 @ _D32.T
    low = c[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def dhash(grey9x8: np.ndarray) -> int:
    bits = (grey9x8[:, 1:] > grey9x8[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def hashes(im: Image.Image) -> tuple[tuple[int, int], tuple[int, int]]:
    """((pHash, dHash) of the image, (pHash, dHash) of its horizontal mirror)."""
    grey = im.convert("L")
    g = np.asarray(grey.resize((32, 32), Image.Resampling.LANCZOS), dtype=np.float64)
    d = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), dtype=np.float64)
    return (phash(g), dhash(d)), (phash(g[:, ::-1].copy()), dhash(d[:, ::-1]))


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")


def similar(a: Photo, b: Photo, limit: tuple[int, int]) -> bool:
    """Whether a (or its mirror) and b are within `limit` in both hashes."""
    return any(hamming(x[0], b.h[0]) <= limit[0] and hamming(x[1], b.h[1]) <= limit[1] for x in (a.h, a.hm))


# ---------------------------------------------------------------------------------------------
@dataclass
class Photo:
    source: str
    package: str
    rel: str
    name: str
    size: tuple[int, int]
    cutout: bool
    h: tuple[int, int] = (0, 0)
    hm: tuple[int, int] = (0, 0)
    split: str = "train"
    image: Image.Image | None = None


def is_cutout(im: Image.Image) -> bool:
    """Any transparent pixel makes a cut-out: its colour is never kept."""
    return im.mode == "RGBA" and bool((np.asarray(im.getchannel("A")) < 250).any())


def opaque_band(im: Image.Image) -> Image.Image | None:
    """The tallest band of fully opaque rows (a landscape panorama whose sky is transparent)."""
    rows = np.asarray(im.getchannel("A")).min(axis=1) >= 250
    best, start = (0, 0), None
    for y, ok in enumerate([*rows, False]):
        if ok and start is None:
            start = y
        elif not ok and start is not None:
            best, start = max(best, (y - start, start)), None
    h, y0 = best
    return im.crop((0, y0, im.width, y0 + h)).convert("RGB") if h >= MIN_CUTOUT else None


def cutout_object(im: Image.Image) -> Image.Image | None:
    """The object's bounding box (alpha > 8), or None when it is smaller than MIN_CUTOUT."""
    a = np.asarray(im.getchannel("A"))
    ys, xs = np.nonzero(a > 8)
    if len(xs) == 0:
        return None
    obj = im.crop((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    return obj if min(obj.size) >= MIN_CUTOUT else None


def composite(obj: Image.Image, backgrounds: list[Image.Image], rng: random.Random) -> Image.Image:
    """Place the cut-out on a random crop of a real photo; the object fills 40-80% of the frame."""
    obj = short_resize(obj, SHORT_SIDE * 3 // 4)
    fill = rng.uniform(0.4, 0.8)
    aspect = rng.choice([1.0, 4 / 3, 3 / 4, 3 / 2, 2 / 3])
    bw, bh = obj.size
    # the frame (W, H) with W / H = aspect in which the object's larger relative extent is `fill`
    h_frame = max(bh / fill, bw / fill / aspect)
    w_frame = h_frame * aspect
    shrink = min(1.0, SHORT_SIDE / min(w_frame, h_frame))  # the frame's short side stays <= SHORT_SIDE
    if shrink < 1.0:
        obj = obj.resize((max(1, round(bw * shrink)), max(1, round(bh * shrink))), Image.Resampling.LANCZOS)
        bw, bh, w_frame, h_frame = *obj.size, w_frame * shrink, h_frame * shrink
    W, H = max(bw, round(w_frame)), max(bh, round(h_frame))
    bg = rng.choice(backgrounds)
    full = min(bg.width, bg.height * W / H)  # the widest crop of aspect W:H that fits
    scale = rng.uniform(min(1.0, max(0.35, W / full / 1.25)), 1.0)  # upscale the background by 1.25 at most
    cw = full * scale
    ch = cw * H / W
    x0, y0 = rng.uniform(0, bg.width - cw), rng.uniform(0, bg.height - ch)
    frame = bg.crop((round(x0), round(y0), round(x0 + cw), round(y0 + ch))).resize((W, H), Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        frame = frame.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    px, py = rng.randint(0, W - bw), rng.randint(0, H - bh)
    frame = frame.convert("RGBA")
    frame.alpha_composite(obj, (px, py))
    return frame.convert("RGB")


def safe_name(rel: str, depth: int) -> str:
    parts = Path(rel.split("!")[-1]).with_suffix("").parts[-depth:]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts)).strip("_")[:80]


def contact_sheets(rows: list[tuple[str, str, str]], cache: Path, out: Path, per: int = 70, cols: int = 10) -> None:
    out.mkdir(parents=True, exist_ok=True)
    by_src: dict[str, list[tuple[str, str, str]]] = {}
    for r in rows:
        by_src.setdefault(r[0], []).append(r)
    for src, rs in by_src.items():
        for k in range(0, len(rs), per):
            chunk = rs[k : k + per]
            t = 120
            sheet = Image.new("RGB", (cols * t, ((len(chunk) + cols - 1) // cols) * (t + 12)), (40, 40, 40))
            d = ImageDraw.Draw(sheet)
            for i, (_, pkg, rel) in enumerate(chunk):
                im = load(cache, pkg, rel, draft=t)
                orig = im.size
                if im.mode == "RGBA":  # a checkerboard shows the transparency
                    chk = (np.indices((im.height, im.width)).sum(0) // 8 % 2 * 60 + 130).astype(np.uint8)
                    bg = Image.fromarray(chk).convert("RGBA")
                    im = Image.alpha_composite(bg, im).convert("RGB")
                im.thumbnail((t - 4, t - 4))
                x, y = (i % cols) * t, (i // cols) * (t + 12)
                sheet.paste(im, (x + 2, y + 2))
                d.text((x + 2, y + t - 1), f"{k + i} {orig[0]}x{orig[1]}", fill="yellow")
            sheet.save(out / f"{src}_{k // per:02d}.png")
            print(f"sheet {src} {k}-{k + len(chunk) - 1}", flush=True)


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder (train/ and heldout/ are made in it)")
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "debs", help="where packages are unpacked")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument(
        "--rebuild-manifest", action="store_true", help="select by the rules alone and rewrite the manifest"
    )
    ap.add_argument("--sheets", type=Path, help="write contact sheets of the rule candidates here and stop")
    ap.add_argument("--quality", type=int, default=JPEG_QUALITY)
    args = ap.parse_args()

    ensure_packages(args.cache, PACKAGES)
    if args.sheets:
        contact_sheets(candidates(args.cache), args.cache, args.sheets)
        return
    if args.rebuild_manifest or not args.manifest.exists():
        if not args.rebuild_manifest:
            print(f"no manifest at {args.manifest}: selecting by the rules alone", flush=True)
        rows = candidates(args.cache)
        write_manifest(args.manifest, rows)
        print(f"wrote {len(rows)} entries to {args.manifest}", flush=True)
    else:
        rows = read_manifest(args.manifest)
    print(f"{len(rows)} photos in the manifest", flush=True)

    # 1. load (reduced), classify, hash
    wall_held = {p.lstrip("/") for p in HELDOUT}
    photos: list[Photo] = []
    names: set[tuple[str, str]] = set()
    small_cutouts = 0
    for i, (src, pkg, rel) in enumerate(rows):
        if i % 100 == 0:
            print(f"loading {i}/{len(rows)}", flush=True)
        im = load(args.cache, pkg, rel, draft=SHORT_SIDE)
        size = im.size
        cut = is_cutout(im)
        if cut and "/landscapes/" in rel:  # stellarium panoramas: keep the ground, not a pasted sky
            im, cut = opaque_band(im), False
            if im is None:
                small_cutouts += 1
                continue
        if cut:
            obj = cutout_object(im)
            if obj is None:
                small_cutouts += 1
                continue
            im = obj
            flat = Image.new("RGBA", im.size, (128, 128, 128, 255))
            flat.alpha_composite(im)
            h = hashes(flat)
        else:
            im = short_resize(im.convert("RGB"), SHORT_SIDE)
            h = hashes(im)
        name = safe_name(rel, 1)
        depth = 1
        while (src, name) in names:
            depth += 1
            name = safe_name(rel, depth) if depth < 5 else f"{safe_name(rel, 4)}_{i}"
        names.add((src, name))
        p = Photo(src, pkg, rel, name, size, cut, h[0], h[1], image=im)
        if src == "wallpapers":
            p.split = "heldout" if rel in wall_held else "train"
        photos.append(p)

    # 2. near-duplicates: keep the larger image (wallpapers first: their split is fixed)
    order = sorted(photos, key=lambda p: (p.source != "wallpapers", -p.size[0] * p.size[1], p.source, p.name))
    kept: list[Photo] = []
    dropped: list[tuple[Photo, Photo]] = []
    for p in order:
        twin = next((k for k in kept if similar(p, k, DUP_DIST)), None)
        if twin is None:
            kept.append(p)
        else:
            dropped.append((p, twin))
    for p, k in dropped:
        print(f"duplicate: {p.source}/{p.name} ~ {k.source}/{k.name}", flush=True)

    # 3. split by photo: groups of look-alikes (looser threshold) go to one side together
    parent = list(range(len(kept)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(kept)):
        for j in range(i):
            if similar(kept[i], kept[j], GROUP_DIST):
                parent[find(i)] = find(j)
    for src in sorted({p.source for p in kept} - {"wallpapers"}):
        rng = random.Random(f"{SEED}/{src}")  # one stream per source: editing one source leaves the others' split
        idx = [i for i, p in enumerate(kept) if p.source == src]
        groups: dict[int, list[int]] = {}
        for i in idx:
            groups.setdefault(find(i), []).append(i)
        want = max(MIN_HELDOUT, round(HELDOUT_FRACTION * len(idx)))
        keys = sorted(groups, key=lambda g: kept[g].name)
        rng.shuffle(keys)
        n = 0
        for g in keys:
            if n >= want:
                break
            if any(kept[j].source == "wallpapers" and kept[j].split == "train" for j in groups[g]):
                continue
            for i in groups[g]:
                kept[i].split = "heldout"
            n += len(groups[g])
    # a group that holds a held-out photo is held out entirely
    held_roots = {find(i) for i, p in enumerate(kept) if p.split == "heldout"}
    for i, p in enumerate(kept):
        if find(i) in held_roots:
            p.split = "heldout"

    # 4. write
    # backgrounds for the cut-outs: full-frame photos of the same split (not the telescope photos)
    backgrounds = {
        s: [
            p.image
            for p in kept
            if p.split == s and not p.cutout and min(p.image.size) >= 256 and "/nebulae/" not in p.rel
        ]
        for s in ("train", "heldout")
    }
    composited = {"train": 0, "heldout": 0}
    counts: dict[tuple[str, str], int] = {}
    cut_counts: dict[str, int] = {}
    for i, p in enumerate(sorted(kept, key=lambda p: (p.source, p.name))):
        if i % 100 == 0:
            print(f"writing {i}/{len(kept)}", flush=True)
        ext = "jpg" if p.split == "train" else "png"
        dst = args.out / p.split / p.source / f"{p.name}.{ext}"
        counts[p.split, p.source] = counts.get((p.split, p.source), 0) + 1
        if p.cutout:
            composited[p.split] += 1
            cut_counts[p.source] = cut_counts.get(p.source, 0) + 1
        if dst.exists():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        im = p.image
        if p.cutout:  # a seed per photo: the result does not depend on which outputs exist
            im = composite(im, backgrounds[p.split], random.Random(f"{SEED}/{p.source}/{p.name}"))
        im = short_resize(im, SHORT_SIDE)
        if ext == "jpg":
            im.save(dst, quality=args.quality)
        else:
            im.save(dst)
    expected = {args.out / p.split / p.source / f"{p.name}.{'jpg' if p.split == 'train' else 'png'}" for p in kept}
    stale = [f for sp in ("train", "heldout") for f in (args.out / sp).glob("*/*.*") if f.parent.name != "samples"]
    stale = [f for f in stale if f not in expected]
    for f in stale:
        f.unlink()
    if stale:
        print(f"removed {len(stale)} stale outputs (no longer selected, or now in the other split)", flush=True)
    samples = args.out / "heldout" / "samples"
    try:
        import skimage.data as sd

        samples.mkdir(parents=True, exist_ok=True)
        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            dst = samples / f"{name}.png"
            if not dst.exists():
                short_resize(Image.fromarray(np.asarray(getattr(sd, name)())).convert("RGB"), SHORT_SIDE).save(dst)
        counts["heldout", "samples"] = 4
    except ImportError:
        print("scikit-image not installed: its sample photos are left out of heldout/samples")

    # 4b. the source-held-out set: hard links (copies where links fail) of whole sources + samples
    held = args.out / "sources_heldout"
    for sp in ("train", "heldout"):
        for source in (*SOURCES_HELDOUT, "samples"):
            for f in sorted((args.out / sp / source).glob("*.*")):
                dst = held / source / f.name
                if not dst.exists():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        dst.hardlink_to(f)
                    except OSError:
                        shutil.copyfile(f, dst)
    n_held = sum(1 for _ in held.glob("*/*.*"))
    print(f"source-held-out set: {n_held} photos of {', '.join(SOURCES_HELDOUT)} and the samples in {held}")

    # 5. report
    srcs = sorted({s for _, s in counts})
    print(f"\n{'source':20s} {'train':>6s} {'heldout':>8s} {'cut-outs':>9s}")
    for s in srcs:
        print(f"{s:20s} {counts.get(('train', s), 0):6d} {counts.get(('heldout', s), 0):8d} {cut_counts.get(s, 0):9d}")
    tt = sum(v for (sp, _), v in counts.items() if sp == "train")
    th = sum(v for (sp, _), v in counts.items() if sp == "heldout")
    print(f"{'total':20s} {tt:6d} {th:8d}")
    print(
        f"near-duplicates dropped: {len(dropped)} (pHash <= {DUP_DIST[0]} and dHash <= {DUP_DIST[1]}, mirrors included)"
    )
    print(f"cut-outs composited on real photos: {composited['train']} train, {composited['heldout']} held-out")
    print(f"cut-outs dropped as smaller than {MIN_CUTOUT} px: {small_cutouts}")
    for sp in ("train", "heldout"):
        total = sum(f.stat().st_size for f in (args.out / sp).rglob("*") if f.is_file())
        print(f"size of {args.out / sp}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
