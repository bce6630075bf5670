"""Write a folder of photo-sized JPEG files for measuring the ImageNet setting's loader.

    /usr/bin/python3 benchmarks/make_photo_folder.py --out /tmp/photos [--classes 10] [--per-class 40]

ImageNet's training images average about 400 × 350 pixels at JPEG quality ~90; nothing of that
kind ships in Debian, so this writes stand-ins of the same sizes (each side drawn from 300 to 500
pixels) from Debian's Fashion-MNIST: each image is one Fashion-MNIST picture scaled up and
coloured, plus a colour gradient and pixel noise so that it compresses like a photo rather than a
flat drawing. Layout: OUT/train/<class>/<n>.jpg. Needs python3-pil and numpy.
"""

import argparse
import gzip
import os
import sys

import numpy as np
from PIL import Image

SOURCE = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args()
    if os.path.exists(args.out):
        sys.exit("error: %s exists; choose another --out" % args.out)
    with gzip.open(SOURCE, "rb") as f:
        pictures = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 28, 28)
    rng = np.random.default_rng(7)
    sizes = []
    for c in range(args.classes):
        folder = os.path.join(args.out, "train", "class%02d" % c)
        os.makedirs(folder)
        for n in range(args.per_class):
            width, height = (int(v) for v in rng.integers(300, 501, size=2))
            picture = Image.fromarray(pictures[c * args.per_class + n]).resize((width, height), Image.BILINEAR)
            grey = np.asarray(picture, dtype=np.float64) / 255
            y, x = np.mgrid[0:height, 0:width] / max(width, height)
            tint = rng.uniform(0.3, 1.0, size=3)
            rgb = np.stack([grey * tint[k] + 0.3 * np.sin(3 * x + 2 * y + k) for k in range(3)], axis=-1)
            rgb = np.clip(rgb * 200 + 30 + rng.normal(0, 8, rgb.shape), 0, 255).astype(np.uint8)
            Image.fromarray(rgb).save(os.path.join(folder, "%03d.jpg" % n), quality=90)
            sizes.append(os.path.getsize(os.path.join(folder, "%03d.jpg" % n)))
    print("wrote %d JPEG files in %s, %.0f KiB on average" % (len(sizes), args.out, np.mean(sizes) / 1024))


if __name__ == "__main__":
    main()
