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


def test_demo_writes_the_bytes_the_api_returns(store, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.service.conftest import make_settings

    publish_tiny(store, "vae")
    out = tmp_path / "vae.png"
    # fp32 on both sides, as make_settings serves: "auto" picks bf16 on a chip with AMX or AVX512-BF16
    proc = run_demo("--checkpoints", str(store.root), "--model", "vae", "-n", "10", "--seed", "3", "--out", str(out),
                    "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    with TestClient(create_app(make_settings(store))) as client:  # the fitted prior, the served copy, the same grid
        assert out.read_bytes() == client.get("/sample?model=vae&n=10&seed=3").content
    proc = run_demo("--checkpoints", str(store.root), "--model", "vae", "--prior", "standard", "--out", str(out),
                    "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    with TestClient(create_app(make_settings(store))) as client:
        assert out.read_bytes() == client.get("/sample?model=vae&n=64&seed=0&prior=standard").content


def test_demo_explains_a_missing_model_without_a_traceback(store, tmp_path):
    proc = run_demo("--checkpoints", str(store.root), "--model", "vae", "--out", str(tmp_path / "x.png"))
    assert proc.returncode == 1
    assert "no published versions of model 'vae'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_demo("-n", "0")
    assert proc.returncode == 2 and "-n must be between 1 and 1024" in proc.stderr


def test_figures_writes_the_study_figures_the_service_would_serve(store, tmp_path):
    import io

    import numpy as np
    from fastapi.testclient import TestClient

    from service.app import create_app
    from tests.conftest import publish_vivid_gan
    from tests.service.conftest import make_settings

    from tests.service.test_attributes import directions

    for kind in ("ae", "vae"):
        publish_tiny(store, kind)
    publish_vivid_gan(store, name="gan")
    vae = store.load("vae")  # the VAE's latest carries attribute directions: Smiling and Male of the figure's five
    store.copy_from(store, "vae", extras=vae.extras | directions(vae.model.latent_dim).to_tensors())
    out = tmp_path / "figures"
    proc = run_demo("figures", "--checkpoints", str(store.root), "--out", str(out), "--precision", "fp32",
                    "--projection-steps", "5")
    assert proc.returncode == 0, proc.stderr
    expected = {f"{m}_{f}.png" for m in ("ae", "vae", "gan") for f in ("samples", "reconstructions", "lerp_vs_slerp", "latent_grid")}
    expected |= {"ae_pca.png", "vae_pca.png", "ae_vs_vae_latent_grid.png"}  # the GAN published here has no basis
    expected |= {"vae_attributes.png"}  # the only model with directions
    assert {p.name for p in out.iterdir()} == expected
    assert Image.open(out / "vae_reconstructions.png").size == (8 * 66 + 2, 4 * 66 + 2)  # 16 faces over 16 reconstructions
    assert Image.open(out / "gan_reconstructions.png").size == (8 * 66 + 2, 2 * 66 + 2)  # 8 faces over 8 projections
    assert Image.open(out / "ae_vs_vae_latent_grid.png").size == (2 * (7 * 66 + 2) + 24, 7 * 66 + 2)
    assert Image.open(out / "vae_attributes.png").size == (5 * 66 + 2, 6 * 66 + 2)  # Smiling and Male, 3 faces each

    def pixels(png: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    with TestClient(create_app(make_settings(store))) as client:  # the same view from the API, same pixels
        for figure, url in [("vae_samples", "/sample?model=vae&n=32&nrow=8&seed=0"),
                            ("gan_latent_grid", "/latent-grid?model=gan&dim_x=0&dim_y=1&span=3&steps=7"),
                            ("ae_pca", "/pca-grid?model=ae&pc_x=0&pc_y=1&span=3&steps=7")]:
            served = pixels(client.get(url).content)
            assert np.array_equal(pixels((out / f"{figure}.png").read_bytes()), served), figure
        smiling = pixels(client.get("/edit?model=vae&attribute=Smiling&n=3&steps=5&span=3&seed=0").content)
        assert np.array_equal(pixels((out / "vae_attributes.png").read_bytes())[:len(smiling)], smiling)


def test_figures_explains_an_empty_root(store, tmp_path):
    proc = run_demo("figures", "--checkpoints", str(store.root), "--out", str(tmp_path / "f"))
    assert proc.returncode == 1 and "no models under" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_demo("figures")
    assert proc.returncode == 2 and "--out" in proc.stderr
