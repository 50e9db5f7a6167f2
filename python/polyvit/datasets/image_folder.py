"""Image folders: ROOT/<split>/<class>/... image files, the layout of ImageNet-style datasets.

    ROOT/train/<class>/**/*.jpg     the class list: the sorted folder names of train/
    ROOT/val/<class>/**/*.jpg       (or, without train/, of the split asked for)
    ROOT/test/<class>/**/*.jpg      optional

Images are found recursively inside each class folder, by extension, so Tiny ImageNet's
train/<wnid>/images/*.JPEG works as it is. Tiny ImageNet's val is flat (val/images/*.JPEG, with
the labels in val/val_annotations.txt: filename, wnid, box): the labels are read from that file,
and nothing on disk is moved. A words.txt at the root (wnid, tab, "name, synonym, ...") turns
wnid folder names into readable class names.

Nothing is decoded: an item is a path, and a corrupt image is the caller's to skip when it
decodes it. Hidden files and folders (".DS_Store", macOS's "._photo.jpg") are not items.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from . import SPLITS, LabelledImages, check_not_empty

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
ANNOTATIONS = "val_annotations.txt"  # Tiny ImageNet's labels of a flat images/ folder
WORDS = "words.txt"                  # Tiny ImageNet's wnid -> description table
EXTENSIONS_TEXT = " ".join(sorted(IMAGE_EXTENSIONS))


def split_folders(root: Path) -> list[str]:
    """The splits root has a folder for, in SPLITS order."""
    return [split for split in SPLITS if (root / split).is_dir()]


def is_flat_annotated(split_dir: Path) -> bool:
    """Tiny ImageNet's val layout: images/ beside val_annotations.txt, no class folders."""
    return (split_dir / "images").is_dir() and (split_dir / ANNOTATIONS).is_file()


def class_folders(split_dir: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(split_dir)
                  if entry.is_dir() and not entry.name.startswith("."))


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def image_files(folder: Path) -> list[str]:
    """Every image file below folder, sorted. Symbolic links to folders are followed, each real
    folder entered once (a link back up the tree would otherwise loop)."""
    found, entered = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in entered:
            dirnames.clear()
            continue
        entered.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_name(f))
    return sorted(found)


def read_annotations(path: Path) -> dict[str, str]:
    """file name -> class id of a val_annotations.txt (tab-separated: file, wnid, x0 y0 x1 y1)."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc})") from None
    labels: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DatasetError(f"{path}:{number}: expected 'file<TAB>class<TAB>...', "
                               f"got {line[:80]!r}")
        name, class_id = fields[0].strip(), fields[1].strip()
        if labels.setdefault(name, class_id) != class_id:
            raise DatasetError(f"{path}:{number}: {name} is labelled both "
                               f"{labels[name]} and {class_id}")
    return labels


def class_ids(root: Path, split: str) -> tuple[list[str], str]:
    """(the sorted class ids every split is labelled with, the split folder they come from)."""
    reference = "train" if (root / "train").is_dir() else split
    reference_dir = root / reference
    if is_flat_annotated(reference_dir):
        ids = sorted(set(read_annotations(reference_dir / ANNOTATIONS).values()))
    else:
        ids = class_folders(reference_dir)
    if not ids:
        raise DatasetError(f"{reference_dir}: no class folders; an image folder holds one "
                           f"folder of images per class ({reference}/<class>/*.jpg)")
    return ids, reference


def class_names(root: Path, ids: list[str]) -> list[str]:
    """Readable names of class ids: from root/words.txt when there is one (its first name of
    each description: "n01443537<TAB>goldfish, Carassius auratus" -> "goldfish"), else the ids.
    A name two ids share gets its id appended, so the names stay distinct."""
    words = root / WORDS
    if not words.is_file():
        return list(ids)
    wanted, described = set(ids), {}
    try:
        with open(words, encoding="utf-8") as stream:
            for line in stream:
                class_id, _, description = line.rstrip("\r\n").partition("\t")
                if class_id in wanted:
                    described[class_id] = description.split(",")[0].strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{words}: cannot be read ({exc})") from None
    names = [described.get(class_id) or class_id for class_id in ids]
    shared = {name for name in names if names.count(name) > 1}
    return [f"{name} ({class_id})" if name in shared else name
            for name, class_id in zip(names, ids)]


def read_class_folders(split_dir: Path, index: dict[str, int], reference: str
                       ) -> tuple[list[str], list[int]]:
    folders = class_folders(split_dir)
    if not folders:
        raise DatasetError(f"{split_dir}: no class folders; put each class's images in "
                           f"{split_dir.name}/<class>/")
    items: list[str] = []
    labels: list[int] = []
    for name in folders:
        folder = split_dir / name
        if name not in index:
            if name == "images" and not (split_dir / ANNOTATIONS).is_file():
                raise DatasetError(f"{folder}: unlabelled images (no {ANNOTATIONS} beside it); "
                                   f"Tiny ImageNet's test split has no labels: use val")
            raise DatasetError(f"{folder}: class {name!r} is not one of the {len(index)} "
                               f"classes of {reference}/; every split uses {reference}/'s classes")
        files = image_files(folder)
        if not files:
            raise DatasetError(f"{folder}: a class folder with no images ({EXTENSIONS_TEXT}); "
                               f"add its images or remove the folder")
        items.extend(files)
        labels.extend([index[name]] * len(files))
    return items, labels


def read_flat_annotated(split_dir: Path, index: dict[str, int], reference: str
                        ) -> tuple[list[str], list[int]]:
    """Tiny ImageNet's val: the images found in images/, each labelled by val_annotations.txt
    (a listed file that is absent is not an item: the files on disk are the dataset)."""
    annotations_path = split_dir / ANNOTATIONS
    annotations = read_annotations(annotations_path)
    images_dir = split_dir / "images"
    files = image_files(images_dir)
    if not files:
        raise DatasetError(f"{images_dir}: no images ({EXTENSIONS_TEXT})")
    labels = []
    for path in files:
        name = Path(os.path.relpath(path, images_dir)).as_posix()
        class_id = annotations.get(name)
        if class_id is None:
            raise DatasetError(f"{path}: not listed in {annotations_path}, so it has no label; "
                               f"remove it or add its line")
        if class_id not in index:
            raise DatasetError(f"{annotations_path}: {name} is labelled {class_id!r}, not one "
                               f"of the {len(index)} classes of {reference}/")
        labels.append(index[class_id])
    return files, labels


def read_image_folder(root: Path, split: str, source: str) -> LabelledImages:
    check_not_empty(root)
    present = split_folders(root)
    if not present:
        raise DatasetError(f"{root}: no train/, val/ or test/ folder; an image folder holds "
                           f"ROOT/train/<class>/*.jpg, ROOT/val/<class>/*.jpg")
    if split not in present:
        raise DatasetError(f"{root}: no {split} split (no {split}/ folder); splits here: "
                           f"{', '.join(present)}")
    ids, reference = class_ids(root, split)
    index = {class_id: label for label, class_id in enumerate(ids)}
    split_dir = root / split
    if is_flat_annotated(split_dir):
        items, labels = read_flat_annotated(split_dir, index, reference)
    else:
        items, labels = read_class_folders(split_dir, index, reference)
    return LabelledImages(source=source, kind="imagefolder", split=split,
                          classes=class_names(root, ids), items=items,
                          labels=np.asarray(labels, dtype=np.int64))
