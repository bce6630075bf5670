"""Write Debian's Fashion-MNIST as a folder of PNG files, one folder per class.

    python3 scripts/fashion_mnist_folder.py --out data/fashion-mnist-png [--per-class 400] [--val-per-class 100]

Real images that need no download, in torchvision's ImageFolder layout, for `--dataset folder`:

    OUT/train/<class>/<index>.png   the first --per-class training images of each class
    OUT/val/<class>/<index>.png     the first --val-per-class test images of each class

Each file is a 28 × 28 8-bit greyscale PNG of the original pixels (`index` is the image's position
in its IDX file). Only the standard library is used (gzip, zlib), so a fresh Debian machine with
`dataset-fashion-mnist` installed can run it. The folder is written beside OUT and renamed into place
when complete; an existing OUT is never touched.
"""

import argparse
import gzip
import os
import shutil
import struct
import sys
import zlib

SOURCE = "/usr/share/datasets/fashion-mnist"
# torchvision's FashionMNIST.classes, with '/' and ' ' made file-name safe.
CLASSES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]


def read_idx(path, magic, dimensions):
    with gzip.open(path, "rb") as f:
        data = f.read()
    found, *shape = struct.unpack(">%dI" % (1 + dimensions), data[: 4 * (1 + dimensions)])
    if found != magic:
        sys.exit("error: %s starts with magic %d, expected %d; reinstall dataset-fashion-mnist" % (path, found, magic))
    return shape, data[4 * (1 + dimensions) :]


def png_bytes(pixels, width, height):
    """An 8-bit greyscale PNG: signature, IHDR, one IDAT, IEND."""

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + pixels[y * width : (y + 1) * width] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def write_part(target, prefix, per_class):
    (count, rows, columns), images = read_idx(os.path.join(SOURCE, prefix + "-images-idx3-ubyte.gz"), 2051, 3)
    (label_count,), labels = read_idx(os.path.join(SOURCE, prefix + "-labels-idx1-ubyte.gz"), 2049, 1)
    if label_count != count:
        sys.exit("error: %d images but %d labels in %s; reinstall dataset-fashion-mnist" % (count, label_count, SOURCE))
    written = [0] * len(CLASSES)
    size = rows * columns
    for index in range(count):
        label = labels[index]
        if written[label] >= per_class:
            continue
        folder = os.path.join(target, CLASSES[label])
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "%05d.png" % index), "wb") as f:
            f.write(png_bytes(images[index * size : (index + 1) * size], columns, rows))
        written[label] += 1
        if min(written) >= per_class:
            break
    return sum(written)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to create (must not exist)")
    parser.add_argument("--per-class", type=int, default=400, help="training images per class (at most 6000)")
    parser.add_argument("--val-per-class", type=int, default=100, help="validation images per class (at most 1000)")
    args = parser.parse_args()
    if not (1 <= args.per_class <= 6000 and 1 <= args.val_per_class <= 1000):
        sys.exit("error: --per-class must lie in 1..6000 and --val-per-class in 1..1000")
    if os.path.exists(args.out):
        sys.exit("error: %s exists; choose another --out or remove it (nothing was written)" % args.out)
    if not os.path.isfile(os.path.join(SOURCE, "train-images-idx3-ubyte.gz")):
        sys.exit("error: Fashion-MNIST not found in %s; install it: apt install dataset-fashion-mnist" % SOURCE)
    partial = args.out.rstrip("/") + ".partial-%d" % os.getpid()
    try:
        train = write_part(os.path.join(partial, "train"), "train", args.per_class)
        val = write_part(os.path.join(partial, "val"), "t10k", args.val_per_class)
        os.rename(partial, args.out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    print("wrote %d training and %d validation PNG files in %s" % (train, val, args.out))


if __name__ == "__main__":
    main()
