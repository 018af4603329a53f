"""python -m tools.check_data: planted bad images, missing files, official counts, refused caches."""
from __future__ import annotations

import io
import os
import pickle
import shlex
import subprocess
import sys

import pytest
from PIL import Image

import _dataset_fixtures  # noqa: F401  (repository root on sys.path)
from _dataset_fixtures import ROOT
from datasets.synthetic import make_synthetic_dataset
from tools.check_data import OFFICIAL_COUNTS, check_dataset, main


class ShellPayload:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_official_counts_cover_the_15_datasets():
    from datasets.specs import SPECS

    assert set(OFFICIAL_COUNTS) == {s.key for s in SPECS}
    assert OFFICIAL_COUNTS["eurosat"] == {"train": 13500, "val": 5400, "test": 8100}
    assert OFFICIAL_COUNTS["imagenet"] == {"train": 1281167, "test": 50000}


def test_clean_tree_passes_and_counts_are_information(tmp_path, capsys):
    make_synthetic_dataset(tmp_path, "eurosat", num_classes=3, per_class=4)
    assert main(["eurosat", "--root", str(tmp_path), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "24 files listed: 0 missing, 0 not decodable" in out and "EuroSAT: OK" in out
    assert "train" in out and "13,500  DIFFERENT" in out and "reported only" in out
    assert main(["EuroSAT", "--root", str(tmp_path), "--strict-counts"]) == 1
    assert "EuroSAT: PROBLEMS FOUND" in capsys.readouterr().out


def test_planted_bad_images_and_missing_file_are_listed(tmp_path, capsys):
    make_synthetic_dataset(tmp_path, "dtd", num_classes=3, per_class=4, fmt="png")
    images = sorted((tmp_path / "dtd" / "images").rglob("*.png"))
    not_image, truncated_png, missing = images[0], images[1], images[2]
    not_image.write_bytes(b"<html>404 Not Found</html>")  # what a failed download leaves
    truncated_png.write_bytes(_png_bytes()[:60])
    missing.unlink()
    make_synthetic_dataset(tmp_path, "eurosat", num_classes=2, per_class=2)  # JPEG layout
    jpeg = sorted((tmp_path / "eurosat" / "2750").rglob("*.jpg"))[0]
    jpeg.write_bytes(jpeg.read_bytes()[:400])

    assert main(["dtd", "--root", str(tmp_path), "--workers", "3"]) == 1
    out = capsys.readouterr().out
    lines = {line.split("  [")[0].strip(): line for line in out.splitlines() if "  [" in line}
    assert set(lines) == {str(not_image), str(truncated_png), str(missing)}
    assert "not decodable" in lines[str(not_image)] and "not decodable" in lines[str(truncated_png)]
    assert lines[str(missing)].endswith(": missing")
    assert "2 not decodable" in out and "1 missing" in out and "DescribableTextures: PROBLEMS FOUND" in out
    assert main(["eurosat", "--root", str(tmp_path), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"{jpeg}  [" in out and "1 not decodable" in out
    # --no-decode only checks presence
    assert main(["dtd", "--root", str(tmp_path), "--no-decode"]) == 1
    out = capsys.readouterr().out
    assert str(missing) in out and str(not_image) not in out


def test_split_file_problems_and_refused_cache(tmp_path, capsys):
    assert main(["oxford_pets", "--root", str(tmp_path)]) == 1
    assert "OxfordPets dataset folder not found" in capsys.readouterr().out
    make_synthetic_dataset(tmp_path, "oxford_pets", num_classes=2, per_class=2)
    cache = tmp_path / "oxford_pets" / "split_fewshot"
    cache.mkdir()
    marker = tmp_path / "pwned"
    (cache / "shot_1-seed_1.pkl").write_bytes(pickle.dumps({"train": [ShellPayload(str(marker))]}))
    assert main(["oxford_pets", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{cache / 'shot_1-seed_1.pkl'}: Refusing to load" in out and not marker.exists()
    (tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json").write_text("{")
    assert main(["oxford_pets", "--root", str(tmp_path)]) == 1
    assert "is not valid JSON" in capsys.readouterr().out


def test_imagenet_and_variant_counts(tmp_path):
    make_synthetic_dataset(tmp_path, "imagenet", num_classes=3, per_class=2)
    report = check_dataset("ImageNet", str(tmp_path), workers=1)
    assert report.counts == {"train": 6, "test": 3, "classes": 3} and report.files == 9 and report.ok()
    assert report.official == {"train": 1281167, "test": 50000, "classes": 1000}
    make_synthetic_dataset(tmp_path, "imagenet_a", num_classes=2, per_class=2)
    report = check_dataset("imagenet_a", str(tmp_path), workers=1)
    assert report.counts == {"test": 4, "classes": 2} and report.count_mismatches == ["test", "classes"]
    assert report.ok() and not report.ok(strict_counts=True)


def test_command_line_entry_point(tmp_path):
    make_synthetic_dataset(tmp_path, "eurosat", num_classes=2, per_class=2)
    run = subprocess.run([sys.executable, "-m", "tools.check_data", "eurosat", "--root", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "EuroSAT: OK" in run.stdout and "decoding" in run.stderr  # the progress bar


def test_unknown_dataset_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["nosuchset", "--root", str(tmp_path)])
    assert e.value.code == 2 and "nosuchset" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 4])
def test_workers_do_not_change_the_result(tmp_path, workers):
    make_synthetic_dataset(tmp_path, "caltech101", num_classes=3, per_class=4)
    images = sorted((tmp_path / "caltech-101" / "101_ObjectCategories").rglob("*.jpg"))
    for p in images[::5]:
        p.write_bytes(b"")
    report = check_dataset("caltech101", str(tmp_path), workers=workers)
    assert [b[0] for b in report.bad] == [str(p) for p in images[::5]]
