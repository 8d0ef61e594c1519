import hashlib
import json

import numpy as np
import pytest

from tests.trainer.conftest import REPO, face, run_trainer, write_celeba, zip_folder
from trainer.data import PackedFaces, prepare_data
from trainer.sources import SourceError, find_source


def check_packed(out, n):
    ds = PackedFaces.open(out)
    assert ds.images.shape == (n, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.fingerprint == hashlib.sha256(np.ascontiguousarray(ds.images).tobytes()).hexdigest()
    # The centred square of a 178×218 face excludes the red bands entirely.
    assert not ((ds.images[..., 0] > 200) & (ds.images[..., 1] < 50)).any()
    return ds


def test_official_folder_layout_uses_the_partition(tmp_path):
    write_celeba(tmp_path / "src", 9)
    report = prepare_data(tmp_path / "src", tmp_path / "out", workers=2, progress=False)
    ds = check_packed(tmp_path / "out", 9)
    assert report["split_kind"] == "official" and report["layout"] == "celeba-folder"
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 3, "valid": 3, "test": 3}
    assert (tmp_path / "out" / "names.txt").read_text().split() == [f"{i:06d}.jpg" for i in range(1, 10)]
    # Rows follow the sorted names, and each face keeps its own colour.
    assert ds.images[4, 32, 32, 0] == pytest.approx((4 * 37) % 180, abs=3)


def test_torchvision_layout(tmp_path):
    write_celeba(tmp_path / "root" / "celeba", 6)
    report = prepare_data(tmp_path / "root", tmp_path / "out", workers=1, progress=False)
    assert report["layout"] == "torchvision" and report["split_kind"] == "official"
    check_packed(tmp_path / "out", 6)


def test_official_zip_with_a_partition_file_that_lists_absent_images(tmp_path):
    names = write_celeba(tmp_path / "unpacked", 6, partition_extra=50)
    (tmp_path / "dl").mkdir()
    zip_folder(tmp_path / "unpacked", tmp_path / "dl" / "img_align_celeba.zip")
    (tmp_path / "dl" / "list_eval_partition.txt").write_text((tmp_path / "unpacked" / "list_eval_partition.txt").read_text())
    for source in (tmp_path / "dl" / "img_align_celeba.zip", tmp_path / "dl"):
        out = tmp_path / f"out-{source.suffix or 'dir'}"
        report = prepare_data(source, out, workers=2, progress=False)
        assert report["splits"] == {"train": 2, "valid": 2, "test": 2}
        assert (out / "names.txt").read_text().split() == names
        check_packed(out, 6)


def test_any_folder_of_images_gets_a_seeded_split(tmp_path):
    for i in range(20):
        sub = tmp_path / "faces" / ("a" if i % 2 else "b/deeper")
        sub.mkdir(parents=True, exist_ok=True)
        face(i, (64, 80)).save(sub / f"img{i:02d}.png")
    report = prepare_data(tmp_path / "faces", tmp_path / "out", workers=1, progress=False, seed=3)
    assert report["split_kind"].startswith("seeded") and report["splits"] == {"train": 16, "valid": 2, "test": 2}
    ds = PackedFaces.open(tmp_path / "out")
    assert sorted(np.concatenate(list(ds.splits.values())).tolist()) == list(range(20))
    again = prepare_data(tmp_path / "faces", tmp_path / "out2", workers=1, progress=False, seed=3)
    assert again["fingerprint"] == report["fingerprint"]
    assert np.array_equal(PackedFaces.open(tmp_path / "out2").splits["test"], ds.splits["test"])


def test_corrupt_files_are_skipped_counted_and_listed(tmp_path):
    write_celeba(tmp_path / "src", 5)
    (tmp_path / "src" / "img_align_celeba" / "000002.jpg").write_bytes(b"\xff\xd8\xff garbage")
    data = (tmp_path / "src" / "img_align_celeba" / "000004.jpg").read_bytes()
    (tmp_path / "src" / "img_align_celeba" / "000004.jpg").write_bytes(data[: len(data) // 3])
    report = prepare_data(tmp_path / "src", tmp_path / "out", workers=2, progress=False)
    assert report["n_skipped"] == 2 and report["n_images"] == 3
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in report["skipped"]) == ["000002.jpg", "000004.jpg"]
    check_packed(tmp_path / "out", 3)
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["n_skipped"] == 2


@pytest.mark.parametrize("setup,message", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "contains no images"),
    (lambda p: p.write_text("hello"), "not a zip archive"),
])
def test_wrong_sources_are_clear_errors(tmp_path, setup, message):
    source = tmp_path / "source"
    setup(source)
    with pytest.raises(SourceError, match=message):
        find_source(source)


def test_cli_reports_and_refuses_to_overwrite(tmp_path):
    write_celeba(tmp_path / "src", 4)
    (tmp_path / "src" / "img_align_celeba" / "000003.jpg").write_bytes(b"not a jpeg")
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "out", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "packed 3 faces" in proc.stdout and "skipped 1 unreadable" in proc.stdout and "000003.jpg" in proc.stdout
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 1 and "already exists; pass --overwrite" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_trainer("prepare-data", tmp_path / "nowhere", "--out", tmp_path / "o2", cwd=tmp_path)
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o2").exists()
    proc = run_trainer("prepare-data", "--help", cwd=REPO)
    assert proc.returncode == 0 and "178×178" in proc.stdout


# --- attribute labels ---------------------------------------------------------------------------

ATTRS = ["Smiling", "Male", "Eyeglasses"]


def write_attributes(path, rows: dict[str, list[int]], count: int = 202599, names=ATTRS):
    """The official format: a count line (here disagreeing, as in a partial copy), names, CRLF rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(count), " ".join(names)] + [f"{n} " + " ".join(f"{v:2d}" for v in vals) for n, vals in rows.items()]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())


def test_attribute_labels_are_found_in_every_layout_and_aligned_with_unknowns_as_zero(tmp_path):
    rows = {"000001.jpg": [1, -1, -1], "000003.jpg": [-1, 1, 1], "999999.jpg": [1, 1, 1]}  # no 000002; one absent face
    official = tmp_path / "official"  # the download: img_align_celeba/, Anno/, Eval/
    write_celeba(official, 3)
    (official / "Eval").mkdir()
    (official / "list_eval_partition.txt").rename(official / "Eval" / "list_eval_partition.txt")
    write_attributes(official / "Anno" / "list_attr_celeba.txt", rows)
    tv = tmp_path / "tv"  # torchvision: ROOT/celeba/{img_align_celeba/, list_attr_celeba.txt}
    write_celeba(tv / "celeba", 3)
    write_attributes(tv / "celeba" / "list_attr_celeba.txt", rows)
    zipped = tmp_path / "zipped"  # the official zip with the annotation files beside it
    zipped.mkdir()
    zip_folder(official, zipped / "img_align_celeba.zip")
    write_attributes(zipped / "list_attr_celeba.txt", rows)
    for source in (official, tv, zipped / "img_align_celeba.zip"):
        out = tmp_path / f"out-{source.name}"
        report = prepare_data(source, out, workers=1, progress=False)
        names, labels = PackedFaces.open(out).attributes()
        assert names == ATTRS and labels.dtype == np.int8
        assert labels.tolist() == [[1, -1, -1], [0, 0, 0], [-1, 1, 1]], source
        assert report["attributes"]["n_labelled"] == 2 and report["attributes"]["positives"] == {"Smiling": 1, "Male": 1, "Eyeglasses": 1}


def test_a_dataset_without_labels_has_none(tmp_path):
    write_celeba(tmp_path / "src", 3)
    report = prepare_data(tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    assert report["attributes"] is None and PackedFaces.open(tmp_path / "out").attributes() is None
    assert not (tmp_path / "out" / "attributes.npz").exists()


@pytest.mark.parametrize("rows,names,message", [
    ({"000001.jpg": [1, -1]}, ATTRS, r"list_attr_celeba.txt:3: expected an image name and 3 values, got 3 columns"),
    ({"000001.jpg": [1, -1, 1], "000002.jpg": [1, 0, 1]}, ATTRS, r"list_attr_celeba.txt:4: attribute values are 1 or -1, got '0' for Male"),
    ({"123456.jpg": [1, -1, 1]}, ATTRS, r"list_attr_celeba.txt:3: none of its 1 image names \(123456.jpg, ...\)"),
])
def test_a_malformed_attribute_file_is_an_error_naming_the_file_and_line(tmp_path, rows, names, message):
    write_celeba(tmp_path / "src", 3)
    write_attributes(tmp_path / "src" / "list_attr_celeba.txt", rows, names=names)
    with pytest.raises(SourceError, match=message):
        prepare_data(tmp_path / "src", tmp_path / "out", workers=1, progress=False)
    assert not (tmp_path / "out").exists()
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "out", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 1 and "list_attr_celeba.txt:" in proc.stderr and "Traceback" not in proc.stderr


def test_the_attribute_file_can_be_named_and_is_reported(tmp_path):
    write_celeba(tmp_path / "src", 3)
    write_attributes(tmp_path / "elsewhere" / "attrs.txt", {"000002.jpg": [1, 1, -1]})
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "out", "--no-progress",
                       "--attributes", tmp_path / "elsewhere" / "attrs.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "attribute labels for 1 faces (train 0, valid 1, test 0)" in proc.stdout
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "o2", "--attributes", tmp_path / "nope.txt", cwd=tmp_path)
    assert proc.returncode == 1 and "attribute file" in proc.stderr and "does not exist" in proc.stderr


# --- what a new user trips on -------------------------------------------------------------------

def test_a_partition_that_holds_nothing_out_is_warned_about_and_can_be_replaced(tmp_path):
    write_celeba(tmp_path / "src", 20)
    (tmp_path / "src" / "list_eval_partition.txt").write_text("".join(f"{i:06d}.jpg 0\n" for i in range(1, 21)))
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "all-train", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train 20, valid 0, test 0" in proc.stdout
    assert "warning: no valid and no test faces" in proc.stderr and "--random-split" in proc.stderr
    proc = run_trainer("prepare-data", tmp_path / "src", "--out", tmp_path / "held-out", "--random-split", "--no-progress",
                       cwd=tmp_path)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    data = PackedFaces.open(tmp_path / "held-out")
    assert (len(data.splits["train"]), len(data.splits["valid"]), len(data.splits["test"])) == (16, 2, 2)


def test_a_raw_zip_given_as_data_gets_advice_that_does_not_write_onto_it(tmp_path):
    write_celeba(tmp_path / "src", 3)
    zip_folder(tmp_path / "src", tmp_path / "img_align_celeba.zip")
    with pytest.raises(SourceError) as e:
        PackedFaces.open(tmp_path / "img_align_celeba.zip")
    assert f"prepare-data {tmp_path / 'img_align_celeba.zip'} --out {tmp_path / 'img_align_celeba-64'}" in str(e.value)
    assert f"--data {tmp_path / 'img_align_celeba-64'}" in str(e.value)
    with pytest.raises(SourceError, match=f"prepare-data SOURCE --out {tmp_path / 'new'}"):
        PackedFaces.open(tmp_path / "new")
