import pytest

from models_core.atomic_files import atomic_write_bytes, claim_next_number, replace_dir


def test_a_number_another_writer_took_is_skipped_and_endless_losses_are_an_error():
    taken = {1, 2}
    claimed = claim_next_number(lambda: min(n for n in range(1, 10) if n not in taken), lambda n: n not in taken and not taken.add(n))
    assert claimed == 3 and taken == {1, 2, 3}
    with pytest.raises(RuntimeError, match="after 5 attempts"):
        claim_next_number(lambda: 1, lambda n: False, attempts=5)


def test_a_folder_is_replaced_whole_and_no_temp_file_is_left(tmp_path):
    target = tmp_path / "data"
    for content in (b"first", b"second"):
        new = tmp_path / f".data.partial-{content.decode()}"
        new.mkdir()
        (new / "f.bin").write_bytes(content)
        replace_dir(new, target)
    assert (target / "f.bin").read_bytes() == b"second"
    atomic_write_bytes(tmp_path / "x.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "x.json"]
