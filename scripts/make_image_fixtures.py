"""Generate the image-folder fixtures the Swift tests read (Tests/Fixtures/images/).

Run with Debian's Python (python3-pil, python3-torchvision):

    /usr/bin/python3 scripts/make_image_fixtures.py

It writes, from a seeded numpy generator:

* Tests/Fixtures/images/<name>.<jpg|png>: small images of odd sizes in the colour modes a user's
  folder holds: colour and greyscale JPEG (baseline and progressive), RGB, greyscale, greyscale +
  alpha, RGBA, palette and 1-bit PNG.
* Tests/Fixtures/images/expected.safetensors: for each image `<name>`,
  - `<name>.decoded`  (H, W, 3): `Image.open(f).convert('RGB')`, torchvision's ImageFolder loader;
  - `<name>.s<S>`     (3, S, S) for S in 32 and 16: `Resize(S)` then `CenterCrop(S)` of that image
    (torchvision.transforms on the Pillow image, bilinear with antialiasing), as bytes in CHW order.
  - `<name>.crop<k>`   (3, 16, 16) for the boxes CROPS[k]: torchvision's
    `F.resized_crop(image, top, left, height, width, 16)`, mirrored for the boxes marked so
    (`F.hflip`): the training transform of the ImageNet setting with its random draws fixed;
    the boxes are in `<name>.crop<k>.box` (top, left, height, width, flip);
  - `<name>.eval16`   (3, 16, 16): `Resize(18)` then `CenterCrop(16)`, the evaluation transform
    of the ImageNet setting at 16 (⌊16 · 256 / 224⌋ = 18), for the images of CROP_IMAGES.
  - `jitter.<case>`   (3, 16, 16): torchvision's colour-jitter functions on `rgb_progressive_61x47.s16`
    (the image after Resize(16) + CenterCrop(16)) with the factors of JITTER_CASES, one adjustment
    each and, as `jitter.sequence`, all four in the order of JITTER_SEQUENCE (ColorJitter.forward);
  All values are pixel bytes stored as I64 (scripts/safetensors_io.py writes integers so).
  Metadata: the Pillow and torchvision versions.

The Swift loader reproduces Pillow's decoding (the same libjpeg-turbo and libpng) and its
resampling bit for bit, so the tests compare for equality.
"""

import os

import numpy as np
import PIL
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as F

import safetensors_io

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fixtures", "images")
SIZES = (32, 16)
# (top, left, height, width, flip) boxes for the resized crops, inside every image of CROP_IMAGES.
CROPS = [(0, 0, 23, 37, 0), (3, 5, 11, 17, 1), (10, 20, 13, 7, 0), (1, 2, 20, 15, 1)]
# (name, function, factor): each of torchvision's four ColorJitter adjustments, both directions.
JITTER_CASES = [("brightness_up", "brightness", 1.3), ("brightness_down", "brightness", 0.7),
                ("contrast_up", "contrast", 1.35), ("contrast_down", "contrast", 0.65),
                ("saturation_up", "saturation", 1.2), ("saturation_down", "saturation", 0.6),
                ("hue_up", "hue", 0.15), ("hue_down", "hue", -0.17)]
# ColorJitter's order (0 brightness, 1 contrast, 2 saturation, 3 hue) and factors, as one draw.
JITTER_SEQUENCE = ([2, 0, 3, 1], {"brightness": 1.1, "contrast": 0.8, "saturation": 1.3, "hue": -0.05})
CROP_IMAGES = ["rgb_37x23.jpg", "rgb_progressive_61x47.jpg", "rgba_64x40.png", "grey_50x41.jpg"]


def smooth_rgb(rng, height, width):
    """A picture-like image: gradients, a disc and noise, so resampling has something to do."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / width * 3.1 + y / height * 1.3)
    g = 255 * (y / max(height - 1, 1))
    b = np.where((x - width / 2) ** 2 + (y - height / 2) ** 2 < (min(height, width) / 3) ** 2, 230, 40)
    image = np.stack([r, g, b], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_images(rng):
    """{file name: Pillow image and save options}."""
    rgb = Image.fromarray(smooth_rgb(rng, 23, 37))
    grey = Image.fromarray(smooth_rgb(rng, 41, 50)).convert("L")
    return {
        "rgb_37x23.jpg": (rgb, {"quality": 90}),
        "rgb_progressive_61x47.jpg": (Image.fromarray(smooth_rgb(rng, 47, 61)), {"quality": 85, "progressive": True}),
        "grey_50x41.jpg": (grey, {"quality": 92}),
        "rgb_45x64.png": (Image.fromarray(smooth_rgb(rng, 64, 45)), {}),
        "grey_28x28.png": (Image.fromarray(smooth_rgb(rng, 28, 28)).convert("L"), {}),
        "greyalpha_30x26.png": (Image.fromarray(smooth_rgb(rng, 26, 30)).convert("LA"), {}),
        "rgba_64x40.png": (Image.fromarray(smooth_rgb(rng, 40, 64)).convert("RGBA"), {}),
        "palette_33x29.png": (Image.fromarray(smooth_rgb(rng, 29, 33)).quantize(colors=37), {}),
        "onebit_17x19.png": (Image.fromarray(smooth_rgb(rng, 19, 17)).convert("1"), {}),
    }


def main():
    rng = np.random.default_rng(151)
    os.makedirs(OUT, exist_ok=True)
    tensors = {}
    for name, (image, options) in make_images(rng).items():
        path = os.path.join(OUT, name)
        image.save(path, **options)
        with Image.open(path) as opened:
            decoded = opened.convert("RGB")  # torchvision.datasets.folder.pil_loader
        stem = os.path.splitext(name)[0]
        tensors[stem + ".decoded"] = np.asarray(decoded)
        for size in SIZES:
            pipeline = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])
            tensors["%s.s%d" % (stem, size)] = np.asarray(pipeline(decoded)).transpose(2, 0, 1)
        if name in CROP_IMAGES:
            for k, (top, left, height, width, flip) in enumerate(CROPS):
                crop = F.resized_crop(decoded, top, left, height, width, [16, 16])
                crop = F.hflip(crop) if flip else crop
                tensors["%s.crop%d" % (stem, k)] = np.asarray(crop).transpose(2, 0, 1)
                tensors["%s.crop%d.box" % (stem, k)] = np.array([top, left, height, width, flip])
            evaluation = transforms.Compose([transforms.Resize(16 * 256 // 224), transforms.CenterCrop(16)])
            tensors[stem + ".eval16"] = np.asarray(evaluation(decoded)).transpose(2, 0, 1)
    jitter_source = transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])(
        Image.open(os.path.join(OUT, "rgb_progressive_61x47.jpg")).convert("RGB"))
    adjust = {"brightness": F.adjust_brightness, "contrast": F.adjust_contrast,
              "saturation": F.adjust_saturation, "hue": F.adjust_hue}
    for case, function, factor in JITTER_CASES:
        tensors["jitter." + case] = np.asarray(adjust[function](jitter_source, factor)).transpose(2, 0, 1)
    order, factors = JITTER_SEQUENCE
    image = jitter_source
    for step in order:
        function = ["brightness", "contrast", "saturation", "hue"][step]
        image = adjust[function](image, factors[function])
    tensors["jitter.sequence"] = np.asarray(image).transpose(2, 0, 1)
    meta = {"pillow": PIL.__version__, "torchvision": torchvision.__version__, "sizes": ",".join(map(str, SIZES))}
    safetensors_io.save(os.path.join(OUT, "expected.safetensors"), tensors, meta)
    print("wrote", len(tensors), "tensors to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
