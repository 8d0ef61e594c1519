"""The study's report folder, served at /study/ where it exists."""

from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.conftest import make_settings


def test_the_report_is_served_from_the_study_folder(served_store, tmp_path):
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study.json").write_text('{"claims": {}}')
    with TestClient(create_app(make_settings(served_store, study_dir=tmp_path / "study"))) as c:
        r = c.get("/study/study.json")
        assert r.status_code == 200 and r.json() == {"claims": {}}
        assert c.get("/study/../settings.py").status_code == 404


def test_without_a_report_study_is_a_clean_404(served_store, tmp_path):
    with TestClient(create_app(make_settings(served_store, study_dir=tmp_path / "missing"))) as c:
        r = c.get("/study/study.json")
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
