import subprocess
import sys

from PIL import Image

from tests.conftest import publish_tiny


def run_demo(*args):
    return subprocess.run([sys.executable, "-m", "models_core.demo", *args], capture_output=True, text=True, timeout=120)


def test_demo_writes_a_grid_of_samples(store, tmp_path):
    publish_tiny(store, "gan")
    out = tmp_path / "grid.png"
    proc = run_demo("--checkpoints", str(store.root), "--model", "gan", "-n", "9", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "wrote 9 samples of gan v1" in proc.stdout
    assert Image.open(out).size == (3 * 66 + 2, 3 * 66 + 2)


def test_demo_explains_a_missing_model_without_a_traceback(store, tmp_path):
    proc = run_demo("--checkpoints", str(store.root), "--model", "vae", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 1
    assert "no published versions of model 'vae'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_demo("-n", "0")
    assert proc.returncode == 2 and "-n must be between 1 and 1024" in proc.stderr
