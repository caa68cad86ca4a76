"""Writes Samples/data: small fixtures for the LanceData tests, with the values Pillow, h5py and
NumPy give for them, so the Swift tests check LanceData against an independent implementation.

- images/CLASS/...: a folder of class folders (PNG and JPEG, RGB and grey, one nested folder,
  one hidden file and one non-image file that must be ignored), from ../shared/data/cifar10-20.
- images_direct40.npy, images_crop24.npy, images_labels.npy: the folder's images in LanceData's
  sample order, preprocessed by Pillow (convert("RGB"), resize with Image.BILINEAR, /255,
  ImageNet mean/std in float64, NCHW float32): direct to 40x40 (enlarging) and short side 28
  then centre crop 24x24 (shrinking, antialiased).
- variants/*.png|jpg and variants-expected/*.npy: decoder edge cases (palette with and without a
  transparent entry, RGBA, 16-bit grey,
  greyscale and progressive JPEG) and the HWC uint8 pixels Pillow decodes for them.
- tiny.h5: images uint8 [10,12,10,3] NHWC, labels int64 [10], root attribute class_names; group
  test/ with images float32 [4,3,12,10] NCHW and labels. tiny_h5_expected.npy: images/255 as
  NCHW float32; tiny_h5_test_resized.npy: test/images resized directly to 6x5 by Pillow in
  mode "F" (float) per channel, NCHW.
- tiny.npz (np.savez: images, labels = tiny.h5's), keras_style.npz (np.savez_compressed:
  x_train uint8 [5,8,8], y_train, x_test [3,8,8], y_test).
"""
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

here = Path(__file__).resolve().parent
root = here.parent.parent
out = root / "Samples" / "data"
shared = Path(os.environ.get("LANCE_SHARED") or root.parent / "shared")
cifar = shared / "data" / "cifar10-20"
mean = np.array([0.485, 0.456, 0.406])
std = np.array([0.229, 0.224, 0.225])

for name in ["images", "variants", "variants-expected"]:
    shutil.rmtree(out / name, ignore_errors=True)
    (out / name).mkdir(parents=True)


def cifar_image(index, label):
    return Image.open(cifar / f"cifar10_{index:02d}_{label}.png").convert("RGB")


# --- the class folders -------------------------------------------------------------------------
folder = out / "images"
layout = [  # (relative path, cifar index, label, how to save)
    ("airplane/a.png", 3, 0, "png"),
    ("airplane/b.jpg", 10, 0, "jpeg"),
    ("automobile/a.png", 6, 1, "png"),
    ("automobile/more/b.jpg", 9, 1, "jpeg"),
    ("cat/a.jpg", 0, 3, "jpeg"),
    ("cat/b.png", 8, 3, "grey-png"),
    ("cat/c.JPEG", 12, 5, "grey-jpeg"),
]
for relative, index, label, kind in layout:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    image = cifar_image(index, label)
    if kind == "png":
        image.save(path, format="PNG")
    elif kind == "jpeg":
        image.save(path, format="JPEG", quality=90)
    elif kind == "grey-png":
        image.convert("L").save(path, format="PNG")
    else:
        image.convert("L").save(path, format="JPEG", quality=90)
cifar_image(1, 8).save(folder / "cat" / ".hidden.png")
(folder / "cat" / "notes.txt").write_text("not an image: ignored\n")

classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
files, labels = [], []
for label, name in enumerate(classes):
    found = sorted(str(p.relative_to(folder / name)) for p in (folder / name).rglob("*")
                   if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
                   and not any(part.startswith(".") for part in p.relative_to(folder / name).parts))
    files += [folder / name / f for f in found]
    labels += [label] * len(found)


def normalise(image):
    x = np.asarray(image, dtype=np.float64) / 255.0
    return ((x - mean) / std).transpose(2, 0, 1)


def short_side_crop(image, short, crop):
    w, h = image.size
    scale = short / min(w, h)
    resized = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = resized.size
    left, top = (w - crop) // 2, (h - crop) // 2
    return resized.crop((left, top, left + crop, top + crop))


direct = [normalise(Image.open(f).convert("RGB").resize((40, 40), Image.BILINEAR)) for f in files]
cropped = [normalise(short_side_crop(Image.open(f).convert("RGB"), 28, 24)) for f in files]
np.save(out / "images_direct40.npy", np.stack(direct).astype(np.float32))
np.save(out / "images_crop24.npy", np.stack(cropped).astype(np.float32))
np.save(out / "images_labels.npy", np.array(labels, dtype=np.int64))

# --- decoder variants --------------------------------------------------------------------------
variants = out / "variants"
expected = out / "variants-expected"
base = cifar_image(4, 6)
palette = base.convert("P", palette=Image.ADAPTIVE, colors=16)
palette.save(variants / "palette.png")
np.save(expected / "palette.npy", np.asarray(palette.convert("RGB")))
palette.save(variants / "palette_transparent.png", transparency=3)
np.save(expected / "palette_transparent.npy", np.asarray(Image.open(variants / "palette_transparent.png").convert("RGB")))
rgba = base.convert("RGBA")
alpha = np.asarray(rgba).copy()
alpha[..., 3] = np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) % 256
rgba = Image.fromarray(alpha, "RGBA")
rgba.save(variants / "rgba.png")
np.save(expected / "rgba.npy", np.asarray(rgba.convert("RGB")))
grey16 = (np.arange(16 * 24, dtype=np.uint32).reshape(16, 24) * 170 % 65536).astype(np.uint16)
Image.fromarray(grey16).save(variants / "grey16.png")  # mode I;16
np.save(expected / "grey16.npy", (grey16 >> 8).astype(np.uint8)[..., None])
base.convert("L").save(variants / "grey.jpg", quality=85)
np.save(expected / "grey.npy", np.asarray(Image.open(variants / "grey.jpg"))[..., None])
base.save(variants / "progressive.jpg", quality=85, progressive=True)
np.save(expected / "progressive.npy", np.asarray(Image.open(variants / "progressive.jpg").convert("RGB")))

# --- HDF5 and npz ------------------------------------------------------------------------------
rng = np.random.default_rng(20240611)
images = rng.integers(0, 256, size=(10, 12, 10, 3), dtype=np.uint8)
labels = rng.integers(0, 4, size=10).astype(np.int64)
test_images = rng.uniform(-1, 1, size=(4, 3, 12, 10)).astype(np.float32)
test_labels = np.array([3, 0, 2, 1], dtype=np.int64)
with h5py.File(out / "tiny.h5", "w") as f:
    f.create_dataset("images", data=images)
    f.create_dataset("labels", data=labels)
    f.attrs["class_names"] = ["circle", "square", "star", "triangle"]
    f.create_dataset("test/images", data=test_images, chunks=(1, 3, 12, 10), compression="gzip")
    f.create_dataset("test/labels", data=test_labels)
np.save(out / "tiny_h5_expected.npy", (images.astype(np.float64) / 255).transpose(0, 3, 1, 2).astype(np.float32))
resized = np.stack([
    np.stack([np.asarray(Image.fromarray(plane, mode="F").resize((5, 6), Image.BILINEAR)) for plane in sample])
    for sample in test_images])
np.save(out / "tiny_h5_test_resized.npy", resized.astype(np.float32))

np.savez(out / "tiny.npz", images=images, labels=labels)
np.savez_compressed(out / "keras_style.npz",
                    x_train=rng.integers(0, 256, size=(5, 8, 8), dtype=np.uint8), y_train=np.arange(5, dtype=np.uint8),
                    x_test=rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8), y_test=np.arange(3, dtype=np.uint8))
print(f"wrote {out}: {len(files)} folder images, classes {classes}")
