"""polyvit.datasets: every layout read from small fixtures written in the exact on-disk formats
(nothing is downloaded), the fixed split rules, and every error a user can meet."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import polyvit
from polyvit.datasets import SPLITS, DatasetError, LabelledImages, open_dataset
from polyvit.errors import PolyvitError

# ---------------------------------------------------------------------------------------- helpers


def write_image(path: Path, value: int = 128, size: tuple[int, int] = (6, 5)) -> Path:
    """A small real image, so the paths also decode through polyvit.load_image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP"}[path.suffix.lower()]
    Image.new("RGB", size, (value, 255 - value, 7)).save(path, fmt)
    return path


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An idx file as LeCun's site serves them: magic, big-endian dims, uint8 data; .gz by name."""
    if magic is None:
        magic = 0x800 | array.ndim
    raw = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    raw += np.ascontiguousarray(array, np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.name.endswith(".gz") else raw)
    return path


def make_mnist(folder: Path, gz: bool = False, train: int = 25, test: int = 7, seed: int = 0):
    """(train images, train labels, test images, test labels) written as the four idx files."""
    rng = np.random.default_rng(seed)
    arrays = (rng.integers(0, 256, (train, 28, 28), np.uint8), rng.integers(0, 10, train),
              rng.integers(0, 256, (test, 28, 28), np.uint8), rng.integers(0, 10, test))
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name, array in zip(names, arrays):
        write_idx(folder / (name + (".gz" if gz else "")), array)
    return arrays


CIFAR_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse",
               b"ship", b"truck"]


def make_cifar(folder: Path, per_batch: int = 4, test: int = 3, seed: int = 0):
    """The python-version batches as the official archive holds them (dicts with byte keys,
    protocol 2); returns (all training rows, their labels, test rows, test labels)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    train_rows, train_labels = [], []
    for k in range(1, 6):
        rows = rng.integers(0, 256, (per_batch, 3072), np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {b"batch_label": f"training batch {k} of 5".encode(), b"labels": labels,
                 b"data": rows, b"filenames": [b"x.png"] * per_batch}
        (folder / f"data_batch_{k}").write_bytes(pickle.dumps(batch, protocol=2))
        train_rows.append(rows)
        train_labels += labels
    test_rows = rng.integers(0, 256, (test, 3072), np.uint8)
    test_labels = [int(v) for v in rng.integers(0, 10, test)]
    (folder / "test_batch").write_bytes(pickle.dumps(
        {b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": test_rows,
         b"filenames": [b"y.png"] * test}, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps(
        {b"num_cases_per_batch": per_batch, b"label_names": CIFAR_NAMES, b"num_vis": 3072},
        protocol=2))
    return np.concatenate(train_rows), np.array(train_labels), test_rows, np.array(test_labels)


def make_tiny_imagenet(root: Path) -> None:
    """Tiny ImageNet's layout in miniature: train/<wnid>/images/*.JPEG with a boxes file, a flat
    val/images/ labelled by val/val_annotations.txt, an unlabelled test/images/, words.txt."""
    wnids = ["n01443537", "n01629819", "n02124075"]
    for k, wnid in enumerate(wnids):
        for j in range(2):
            write_image(root / "train" / wnid / "images" / f"{wnid}_{j}.JPEG", 40 * k)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t5\t4\n")
    lines = []
    for j, wnid in enumerate(["n02124075", "n01443537", "n02124075", "n01629819"]):
        write_image(root / "val" / "images" / f"val_{j}.JPEG")
        lines.append(f"val_{j}.JPEG\t{wnid}\t0\t1\t5\t4")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    write_image(root / "test" / "images" / "test_0.JPEG")
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text(
        "n00001740\tentity\n"
        "n01443537\tgoldfish, Carassius auratus\n"
        "n01629819\tEuropean fire salamander, Salamandra salamandra\n"
        "n02124075\tEgyptian cat\n")


def tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


def error_of(spec, split: str = "train") -> str:
    with pytest.raises(DatasetError) as caught:
        open_dataset(spec, split)
    message = str(caught.value)
    assert "\n" not in message
    return message


# ----------------------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits():
    pytest.importorskip("sklearn", reason="the digits dataset needs scikit-learn")
    return {split: open_dataset("digits", split) for split in SPLITS}


def test_digits_split_sizes_and_rule(digits):
    from sklearn.datasets import load_digits

    assert {s: len(d) for s, d in digits.items()} == {"test": 360, "val": 360, "train": 1077}
    bunch = load_digits()
    index = np.arange(len(bunch.images))
    for split, chosen in (("test", index % 5 == 0), ("val", index % 5 == 1),
                          ("train", index % 5 >= 2)):
        data = digits[split]
        assert (data.kind, data.source, data.split) == ("digits", "digits", split)
        assert data.classes == [str(d) for d in range(10)]
        assert data.labels.dtype == np.int64
        np.testing.assert_array_equal(data.labels, bunch.target[chosen])
        expected = np.round(bunch.images[chosen] * 255 / 16).astype(np.uint8)
        assert np.asarray(data.items).dtype == np.uint8
        np.testing.assert_array_equal(np.asarray(data.items), expected)
    assert digits["test"].describe() == "digits test: 360 images, 10 classes"
    counts = digits["train"].class_counts()
    assert counts.dtype == np.int64 and counts.shape == (10,) and counts.sum() == 1077


def test_digits_splits_are_disjoint(digits):
    # the same image (pixels and label) in two splits would leak; load_digits has a few
    # duplicates, so compare indices through the rule instead of the pixels
    from polyvit.datasets.digits import split_of_index

    owners = split_of_index(np.arange(1797))
    assert sorted(np.unique(owners, return_counts=True)[1]) == [360, 360, 1077]
    assert sum(len(d) for d in digits.values()) == 1797


def test_digits_items_decode(digits):
    item = digits["val"].items[3]
    assert item.shape == (8, 8) and item.dtype == np.uint8 and item.max() <= 255
    image = polyvit.load_image(item)
    assert image.size == (8, 8) and image.mode == "RGB"


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now raises ImportError
    assert "needs scikit-learn (pip install scikit-learn)" in error_of("digits", "test")


# ------------------------------------------------------------------------------------ imagefolder


def test_image_folder(tmp_path):
    root = tmp_path / "pets"
    write_image(root / "train" / "dog" / "b.png")
    write_image(root / "train" / "dog" / "nested" / "deeper" / "a.JPG")    # recursive, any case
    write_image(root / "train" / "cat" / "c.jpeg")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / "cat" / "._c.jpeg").write_bytes(b"AppleDouble")     # macOS metadata
    write_image(root / "val" / "cat" / "v.bmp")
    (root / "train" / "broken.png").write_bytes(b"")  # a loose file is not in any class

    train = open_dataset(root, "train")
    assert (train.kind, train.split, train.source) == ("imagefolder", "train", str(root))
    assert train.classes == ["cat", "dog"]
    assert train.items == [str(root / "train/cat/c.jpeg"), str(root / "train/dog/b.png"),
                           str(root / "train/dog/nested/deeper/a.JPG")]
    assert train.labels.tolist() == [0, 1, 1] and train.labels.dtype == np.int64
    assert train.class_counts().tolist() == [1, 2]
    assert polyvit.load_image(train.items[2]).size == (6, 5)

    val = open_dataset(f"imagefolder:{root}", "val")   # forced; dog is absent from val
    assert val.classes == ["cat", "dog"] and val.labels.tolist() == [0]
    assert "(no test/ folder); splits here: train, val" in error_of(str(root), "test")


def test_image_folder_without_train_uses_the_split_asked_for(tmp_path):
    write_image(tmp_path / "val" / "b" / "1.png")
    write_image(tmp_path / "val" / "a" / "1.png")
    data = open_dataset(tmp_path, "val")
    assert data.classes == ["a", "b"] and len(data) == 2


def test_image_folder_class_errors(tmp_path):
    write_image(tmp_path / "train" / "cat" / "1.png")
    write_image(tmp_path / "val" / "cow" / "1.png")
    assert "val/cow: class 'cow' is not one of the 1 classes of train/" in error_of(tmp_path, "val")
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "readme.txt").write_text("todo")
    message = error_of(tmp_path, "train")
    assert "train/dog: a class folder with no images" in message


def test_tiny_imagenet(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    make_tiny_imagenet(root)
    before = tree(root)

    train = open_dataset(str(root), "train")
    assert train.kind == "imagefolder"
    assert train.classes == ["goldfish", "European fire salamander", "Egyptian cat"]
    assert len(train) == 6 and train.class_counts().tolist() == [2, 2, 2]
    assert all(item.endswith(".JPEG") and "/images/" in item for item in train.items)

    val = open_dataset(str(root), "val")
    assert val.classes == train.classes
    assert [Path(p).name for p in val.items] == [f"val_{j}.JPEG" for j in range(4)]
    assert val.labels.tolist() == [2, 0, 2, 1]
    assert polyvit.load_image(val.items[0]).mode == "RGB"

    assert "Tiny ImageNet's test split has no labels: use val" in error_of(str(root), "test")
    assert tree(root) == before  # nothing moved, written or deleted


def test_tiny_imagenet_names_without_words_and_with_shared_names(tmp_path):
    make_tiny_imagenet(tmp_path)
    (tmp_path / "words.txt").write_text("n01443537\tcat\nn01629819\tcat, moggy\n")
    assert open_dataset(tmp_path, "train").classes == [
        "cat (n01443537)", "cat (n01629819)", "n02124075"]
    (tmp_path / "words.txt").unlink()
    assert open_dataset(tmp_path, "val").classes == ["n01443537", "n01629819", "n02124075"]


def test_tiny_imagenet_annotation_errors(tmp_path):
    make_tiny_imagenet(tmp_path)
    write_image(tmp_path / "val" / "images" / "extra.JPEG")
    assert "extra.JPEG: not listed in" in error_of(tmp_path, "val")
    (tmp_path / "val" / "images" / "extra.JPEG").unlink()
    with open(tmp_path / "val" / "val_annotations.txt", "a") as stream:
        stream.write("only-a-name\n")
    assert "val_annotations.txt:5: expected 'file<TAB>class<TAB>...'" in error_of(tmp_path, "val")


# ------------------------------------------------------------------------------ mnist (idx files)


@pytest.mark.parametrize("layout", ["plain", "gz", "torchvision-raw"])
def test_mnist(tmp_path, layout):
    folder = tmp_path / "raw" if layout == "torchvision-raw" else tmp_path
    train_x, train_y, test_x, test_y = make_mnist(folder, gz=(layout != "plain"))
    if layout == "torchvision-raw":   # torchvision keeps the .gz and the extracted files
        make_mnist(folder, gz=False)

    test = open_dataset(tmp_path, "test")
    assert (test.kind, test.classes) == ("mnist", [str(d) for d in range(10)])
    np.testing.assert_array_equal(test.items, test_x)
    np.testing.assert_array_equal(test.labels, test_y)

    val, train = open_dataset(tmp_path, "val"), open_dataset(tmp_path, "train")
    index = np.arange(25)
    np.testing.assert_array_equal(val.items, train_x[index % 10 == 0])   # 0, 10, 20
    np.testing.assert_array_equal(val.labels, train_y[index % 10 == 0])
    np.testing.assert_array_equal(train.items, train_x[index % 10 != 0])
    np.testing.assert_array_equal(train.labels, train_y[index % 10 != 0])
    assert (len(train), len(val), len(test)) == (22, 3, 7)
    # items are rows of one array, not one array object per image
    assert isinstance(train.items, np.ndarray) and train.items.shape == (22, 28, 28)
    assert np.shares_memory(val.items[1], val.items)
    image = polyvit.load_image(train.items[0])
    assert image.size == (28, 28) and image.mode == "RGB"


def test_fashion_mnist_is_forced(tmp_path):
    make_mnist(tmp_path, gz=True)
    data = open_dataset(f"fashion-mnist:{tmp_path}", "test")
    assert data.kind == "fashion-mnist" and data.classes[:2] == ["T-shirt/top", "Trouser"]
    assert data.classes[-1] == "Ankle boot" and len(data.classes) == 10
    assert data.describe() == f"fashion-mnist test ({tmp_path}): 7 images, 10 classes"


def test_mnist_truncated_files(tmp_path):
    make_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    assert error_of(tmp_path).startswith(f"{images}: truncated")
    make_mnist(tmp_path, gz=True)
    (tmp_path / "train-images-idx3-ubyte").unlink()   # now the .gz is read
    compressed = tmp_path / "train-images-idx3-ubyte.gz"
    compressed.write_bytes(compressed.read_bytes()[:200])
    assert error_of(tmp_path).startswith(f"{compressed}: cannot be read")


def test_mnist_wrong_magic_and_count_mismatch(tmp_path):
    train_x, train_y, _, _ = make_mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    write_idx(images, train_y)   # a labels file where the images belong
    assert f"{images}: not an idx images file (magic 0x00000801" in error_of(tmp_path)
    write_idx(images, train_x[:20])
    assert "holds 20 images but" in error_of(tmp_path, "val")


def test_mnist_without_test_files(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    assert "no test split" in error_of(tmp_path, "test")
    assert "splits here: train, val" in error_of(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert len(open_dataset(tmp_path, "val")) == 3


# ---------------------------------------------------------------------------------------- cifar10


def test_cifar10(tmp_path):
    train_rows, train_labels, test_rows, test_labels = make_cifar(tmp_path / "cifar-10-batches-py")
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):   # the parent or the folder
        test = open_dataset(root, "test")
        assert test.kind == "cifar10" and test.classes[0] == "airplane" and len(test) == 3
    hwc = test_rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(test.items, hwc)
    # pixel (y=1, x=2) of image 0: red, green and blue planes at offsets 0, 1024, 2048
    assert test.items[0][1, 2].tolist() == [test_rows[0, 34], test_rows[0, 1058],
                                             test_rows[0, 2082]]
    np.testing.assert_array_equal(test.labels, test_labels)

    val, train = open_dataset(f"cifar10:{tmp_path}", "val"), open_dataset(tmp_path, "train")
    index = np.arange(20)
    all_hwc = train_rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(val.items, all_hwc[index % 10 == 0])
    np.testing.assert_array_equal(val.labels, train_labels[index % 10 == 0])
    np.testing.assert_array_equal(train.items, all_hwc[index % 10 != 0])
    np.testing.assert_array_equal(train.labels, train_labels[index % 10 != 0])
    assert train.items.dtype == np.uint8 and train.items.shape == (18, 32, 32, 3)
    assert polyvit.load_image(train.items[0]).size == (32, 32)


def test_cifar10_missing_and_damaged_batches(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    assert error_of(tmp_path).startswith(f"{tmp_path / 'data_batch_3'}: missing")
    assert len(open_dataset(tmp_path, "test")) == 3
    (tmp_path / "test_batch").write_bytes(b"\x80\x02}q\x00(U")
    assert error_of(tmp_path, "test").startswith(f"{tmp_path / 'test_batch'}: not a readable")


class _Payload:
    """What a doctored pickle would carry: code run by the act of loading it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_cifar10_refuses_to_run_pickled_code(tmp_path):
    make_cifar(tmp_path)
    marker = tmp_path / "payload-ran"
    (tmp_path / "batches.meta").write_bytes(pickle.dumps(
        {b"label_names": CIFAR_NAMES, b"x": _Payload(str(marker))}, protocol=2))
    assert "refusing to load io.open, which no CIFAR-10 file refers to" in error_of(tmp_path,
                                                                                   "test")
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- errors


def test_errors_are_polyvit_and_value_errors():
    assert issubclass(DatasetError, PolyvitError) and issubclass(DatasetError, ValueError)


def test_unknown_split_missing_path_and_unknown_kind(tmp_path):
    assert "unknown split 'training': choose one of train, val, test" in error_of("digits",
                                                                                  "training")
    assert error_of(tmp_path / "nowhere").endswith(
        "nowhere: no such file or directory; pass 'digits', a dataset folder, or KIND:PATH")
    assert "unknown dataset kind 'imgfolder'" in error_of(f"imgfolder:{tmp_path}")
    assert "KIND is one of imagefolder, mnist, fashion-mnist, cifar10" in error_of(
        f"svhn:{tmp_path}")
    assert "takes no path" in error_of(f"digits:{tmp_path}")
    (tmp_path / "file.txt").write_text("x")
    assert "a file, not a dataset folder" in error_of(tmp_path / "file.txt")


@pytest.mark.parametrize("kind", ["", "imagefolder:", "mnist:", "fashion-mnist:", "cifar10:"])
def test_empty_dataset_folder(tmp_path, kind):
    assert "the dataset folder is empty" in error_of(f"{kind}{tmp_path}")


def test_unrecognised_folder_and_wrong_forced_kind(tmp_path):
    (tmp_path / "photos").mkdir()
    write_image(tmp_path / "photos" / "1.png")
    message = error_of(tmp_path)
    assert "not a dataset layout polyvit reads" in message
    assert "image folder" in message and "MNIST" in message and "CIFAR-10" in message
    assert "no MNIST idx files" in error_of(f"mnist:{tmp_path}")
    assert f"{tmp_path / 'data_batch_1'}: missing" in error_of(f"cifar10:{tmp_path}")
    assert "no train/, val/ or test/ folder" in error_of(f"imagefolder:{tmp_path}")


def test_a_folder_named_like_a_kind_prefix_is_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "mnist:old" / "train" / "a" / "1.png")
    assert open_dataset("mnist:old", "train").kind == "imagefolder"


def test_labelled_images_checks_lengths():
    with pytest.raises(DatasetError):
        LabelledImages("x", "imagefolder", "train", ["a"], ["p.png"], np.zeros(2, np.int64))


def test_import_is_light():
    code = ("import sys, polyvit.datasets; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'sklearn'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout
    assert out.strip() == "[]"
