"""Gather the real photographs vtok's default model is trained and evaluated on.

Reproducible: a fixed list of files from Debian wallpaper packages (checked by eye: photos
only, one size each, no artwork or logos), a fixed train / held-out split by photo, and fixed
seeds for the held-out crops. The photos' licences (CC-BY, CC-BY-SA, CC0, GPL, LGPL) are in each
package's /usr/share/doc/PACKAGE/copyright; they are not committed to the repository.

    python scripts/gather_photos.py data/photos        # installs the packages with apt-get

Writes data/photos/train/*.jpg (shorter side <= 1024) and data/photos/heldout/*.png: 10 square
crops of random scale per held-out photo plus the sample photos that ship inside
scikit-image, scikit-learn and matplotlib, 256x256 each.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = [
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
CROPS_PER_HELDOUT = 10
CROP_SIZE = 256


def ensure_packages() -> None:
    if all(Path(p).is_file() for p in TRAIN + HELDOUT):
        return
    if shutil.which("apt-get") is None:
        sys.exit(
            "gather_photos: apt-get is not available; install these Debian packages by hand: " + " ".join(PACKAGES)
        )
    print("installing", " ".join(PACKAGES), flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True)
    missing = [p for p in TRAIN + HELDOUT if not Path(p).is_file()]
    if missing:
        sys.exit(f"gather_photos: {len(missing)} expected file(s) missing after install, e.g. {missing[0]}")


def main() -> None:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="output folder (train/ and heldout/ are made in it)")
    args = ap.parse_args()
    ensure_packages()
    train_dir, held_dir = args.out / "train", args.out / "heldout"
    train_dir.mkdir(parents=True, exist_ok=True)
    held_dir.mkdir(parents=True, exist_ok=True)

    def reduced(path: str, short: int) -> Image.Image:
        im = Image.open(path)
        im.draft("RGB", (short, short))
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, "white")
        im = Image.alpha_composite(bg, im).convert("RGB")
        if min(im.size) > short:
            s = short / min(im.size)
            im = im.resize((round(im.width * s), round(im.height * s)), Image.Resampling.LANCZOS)
        return im

    for i, path in enumerate(TRAIN):
        dst = train_dir / f"{i:03d}_{Path(path).stem}.jpg"
        if not dst.exists():
            reduced(path, 1024).save(dst, quality=95)
    rng = random.Random(1234)
    for i, path in enumerate(HELDOUT):
        im = reduced(path, 1024)
        for j in range(CROPS_PER_HELDOUT):
            side = int(min(im.size) * rng.uniform(0.3, 1.0))
            left, top = rng.randint(0, im.width - side), rng.randint(0, im.height - side)
            crop = im.crop((left, top, left + side, top + side)).resize(
                (CROP_SIZE, CROP_SIZE), Image.Resampling.LANCZOS
            )
            crop.save(held_dir / f"{i:02d}_{j}_{Path(path).stem}.png")
    extra = 0
    try:
        import numpy as np
        import skimage.data as sd

        for name in ("astronaut", "chelsea", "coffee", "rocket"):
            im = Image.fromarray(np.asarray(getattr(sd, name)()))
            s = min(im.size)
            im.crop(((im.width - s) // 2, (im.height - s) // 2, (im.width + s) // 2, (im.height + s) // 2)).resize(
                (CROP_SIZE, CROP_SIZE), Image.Resampling.LANCZOS
            ).save(held_dir / f"skimage_{name}.png")
            extra += 1
    except ImportError:
        print("scikit-image not installed: its sample photos are left out of heldout/")
    n_train, n_held = len(list(train_dir.iterdir())), len(list(held_dir.iterdir()))
    print(
        f"{n_train} training photos in {train_dir}; {n_held} held-out images in {held_dir} ({extra} from scikit-image)"
    )


if __name__ == "__main__":
    main()
