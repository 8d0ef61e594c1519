import torch

from models_core.checkpoint import CheckpointStore
from tests.conftest import publish_tiny
from tests.trainer.conftest import run_trainer


def test_promote_copies_the_latest_version_into_the_served_store(tmp_path):
    source = CheckpointStore(tmp_path / "train")
    publish_tiny(source, "gan", seed=1)
    publish_tiny(source, "gan", seed=2)

    r = run_trainer("promote", "--model", "gan", "--from", source.root, "--dtype", "bfloat16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"promoted gan v2 from {source.root} to checkpoints as gan v1" in r.stdout
    served = CheckpointStore(tmp_path / "checkpoints")  # the default destination
    ckpt = served.load("gan")
    assert ckpt.manifest.provenance["copied_from"] == [{"store": str(source.root.resolve()), "name": "gan", "version": 2}]
    assert ckpt.manifest.weights_dtype == "bfloat16"
    weights = lambda c: next(iter(c.model.state_dict().values()))  # noqa: E731
    assert torch.equal(weights(ckpt), weights(source.load("gan", 2)).bfloat16().float())
    assert not torch.equal(weights(ckpt), weights(source.load("gan", 1)).bfloat16().float())


def test_promote_explains_a_missing_version_and_a_same_store_copy(tmp_path):
    source = CheckpointStore(tmp_path / "train")
    publish_tiny(source, "vae")
    r = run_trainer("promote", "--model", "vae", "--version", "7", "--from", source.root, "--to", tmp_path / "serve",
                    cwd=tmp_path)
    assert r.returncode == 1 and "has no version 7; it has [1]" in r.stderr and "Traceback" not in r.stderr
    r = run_trainer("promote", "--model", "vae", "--from", source.root, "--to", source.root, cwd=tmp_path)
    assert r.returncode == 2 and "same store" in r.stderr


def test_promote_can_rename_and_keeps_the_chain_of_copies(tmp_path):
    source = CheckpointStore(tmp_path / "train")
    publish_tiny(source, "gan")
    r = run_trainer("promote", "--model", "gan", "--as", "gansig", "--from", source.root, "--to", tmp_path / "a", cwd=tmp_path)
    assert r.returncode == 0 and "as gansig v1" in r.stdout, r.stderr
    r = run_trainer("promote", "--model", "gansig", "--from", tmp_path / "a", "--to", tmp_path / "b", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    chain = CheckpointStore(tmp_path / "b").read_manifest("gansig").provenance["copied_from"]
    assert [(c["name"], c["version"], c["store"]) for c in chain] == [
        ("gan", 1, str(source.root.resolve())), ("gansig", 1, str((tmp_path / "a").resolve()))]
    r = run_trainer("promote", "--model", "gan", "--as", "no/such", "--from", source.root, "--to", tmp_path / "c", cwd=tmp_path)
    assert r.returncode == 1 and "invalid model name 'no/such'" in r.stderr and "Traceback" not in r.stderr
