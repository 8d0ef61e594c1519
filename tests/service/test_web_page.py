"""The explorer page, driven in headless Chromium against a real server.

On a failure each test saves screenshots at desktop and phone width under test-screenshots/
(FACEGEN_SCREENSHOTS to move it)."""

import io
import os
import shutil
from pathlib import Path

import httpx
import pytest
from PIL import Image

from models_core.checkpoint import CheckpointStore
from models_core.images import held_out_faces, to_uint8
from tests.conftest import publish_tiny, publish_vivid_gan
from service.local_server import wait_until
from tests.service.conftest import start_server
from tests.service.test_attributes import directions

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI") == "true":  # CI installs it: a missing browser is a failure there
    raise RuntimeError("CI=true but chromium is not installed: the browser tests cannot run")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")

SCREENSHOTS = Path(os.environ.get("FACEGEN_SCREENSHOTS", Path(__file__).resolve().parents[2] / "test-screenshots"))
DESKTOP, PHONE = {"width": 1280, "height": 900}, {"width": 390, "height": 844}
PANELS = ("sample", "reconstruct", "interpolate", "pca", "latent", "sliders", "attributes")
SETTLED = ("document.body.dataset.ready === '1' && document.body.dataset.pending === '0' "
           "&& !document.querySelector('figure[data-state=loading]')")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    store = CheckpointStore(tmp_path_factory.mktemp("page") / "checkpoints")
    publish_tiny(store, "ae")
    publish_tiny(store, "vae")
    publish_tiny(store, "vae")  # a second version for the version picker
    publish_vivid_gan(store, name="gan", basis=True)
    for name in ("ae", "vae", "gan"):  # the latest of each carries attribute directions
        ckpt = store.load(name)
        store.copy_from(store, name, extras=ckpt.extras | directions(ckpt.model.latent_dim).to_tensors())
    study = tmp_path_factory.mktemp("study")
    write_study(study)
    server = start_server(store.root, env={"FACEGEN_STUDY_DIR": str(study)})
    yield server
    server.stop()


def write_study(folder: Path) -> None:
    """A report as `python -m trainer study` writes it, two claims long."""
    import json

    Image.new("RGB", (200, 100), (20, 120, 200)).save(folder / "claim1.png")
    claims = {"1": {"title": "Variance sits in a few principal components", "seed_words": "Most variance ...",
                    "plot": "claim1.png", "verdict": {"verdict": "does not hold", "why": "vae: 80% at k = 43",
                                                      "threshold": "k <= 20"}},
              "7": {"title": "Training dynamics", "seed_words": "...", "plot": None,
                    "verdict": {"verdict": "holds", "why": "GAN in balance", "threshold": "t"}}}
    (folder / "study.json").write_text(json.dumps({"setup": {}, "claims": claims}))
    (folder / "README.md").write_text("# The study, measured\n")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, request):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{server.url}/")
    page.wait_for_function(SETTLED, timeout=60_000)
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}-{name}.png"), full_page=True)
    context.close()


def loaded_images(page, selector: str) -> list[dict]:
    """Every loaded image under `selector`, with its size and caption."""
    return page.eval_on_selector_all(f"{selector} img[data-loaded='1']", """imgs => imgs.map(img => ({
        width: img.naturalWidth, height: img.naturalHeight,
        caption: img.closest('figure').querySelector('figcaption').textContent,
        permalink: (img.closest('figure').querySelector('a.permalink') || {}).href || null }))""")


def errors(page) -> str:
    return "".join(page.eval_on_selector_all(".error", "els => els.map(e => e.textContent)"))


def settle(page) -> None:
    page.wait_for_function(SETTLED, timeout=60_000)


def face_files(tmp_path, n: int) -> list[str]:
    paths = []
    for i, face in enumerate(to_uint8(held_out_faces()[:n])):
        path = tmp_path / f"face{i}.png"
        Image.fromarray(face.permute(1, 2, 0).numpy()).resize((178, 218)).save(path)
        paths.append(str(path))
    return paths


def test_every_panel_shows_images_with_working_permalinks(page, server):
    assert page.input_value("#model-a") == "gan"  # the list came from /models
    assert errors(page) == "", errors(page)
    for panel in PANELS:
        images = loaded_images(page, f"#{panel}")
        assert images and all(i["width"] >= 64 and i["height"] >= 64 for i in images), (panel, images)
    assert len(loaded_images(page, "#interpolate")) == 2  # lerp and slerp side by side
    assert "projected in" in loaded_images(page, "#reconstruct")[0]["caption"]  # the GAN reconstructs by projection
    for panel in PANELS:
        link = loaded_images(page, f"#{panel}")[0]["permalink"]
        r = httpx.get(link)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", link
    # sliders sit on a sample: the face is not a flat colour
    face = loaded_images(page, "#sliders")[0]
    darkest, brightest = Image.open(io.BytesIO(httpx.get(face["permalink"]).content)).convert("L").getextrema()
    assert brightest - darkest > 40


def test_phone_width_has_no_sideways_scrolling(page):
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(200)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, f"{overflow}px wider than a phone screen"


def test_uploads_round_trip_through_projection_and_reconstruction(page, tmp_path):
    page.set_input_files("#recon-files", face_files(tmp_path, 2))
    page.click("#recon-upload")
    settle(page)
    assert errors(page) == "", errors(page)
    [gan] = loaded_images(page, "#reconstruct")
    assert "projected in" in gan["caption"] and "POST" in gan["caption"]
    assert page.eval_on_selector_all("#reconstruct .psnr span", "ss => ss.length") == 2  # a PSNR under each face
    assert (gan["width"], gan["height"]) == (2 * 66 + 2, 2 * 66 + 2)  # 2 faces over their 2 projections
    page.select_option("#model-a", "vae")
    settle(page)
    page.click("#recon-upload")  # the chosen files stay chosen
    settle(page)
    [vae] = loaded_images(page, "#reconstruct")
    assert "vae" in vae["caption"] and "projected" not in vae["caption"]
    a, b = face_files(tmp_path, 2)
    page.set_input_files("#interp-file-a", a)
    page.set_input_files("#interp-file-b", b)
    page.click("#interp-go")
    settle(page)
    assert [("between your faces" in i["caption"]) for i in loaded_images(page, "#interpolate")] == [True, True]


def compare(page, a: str | None, b: str, version_b: str | None = None) -> None:
    """Compare mode on: model `a` (left as it is when None) beside `b`, pinned to `version_b` if given."""
    if a is not None:
        page.select_option("#model-a", a)
        settle(page)
    page.check("#compare")
    page.select_option("#model-b", b)
    settle(page)
    if version_b is not None:
        page.select_option("#version-b", version_b)
        settle(page)


def test_compare_mode_shows_the_same_view_for_two_models(page):
    compare(page, "ae", "vae")
    page.select_option("#latent-centre", "zero")
    page.select_option("#latent-units", "absolute")
    page.click("#latent-go")  # the study's AE-vs-VAE latent grid
    settle(page)
    columns = page.eval_on_selector_all("#latent .column", "cs => cs.map(c => c.dataset.model)")
    assert columns == ["ae", "vae"]
    assert len(loaded_images(page, "#latent")) == 2 and len(loaded_images(page, "#sample")) == 2
    page.select_option("#version-b", "1")  # an older version, pinned in every request
    settle(page)
    assert "version=1" in loaded_images(page, "#sample")[1]["permalink"]


def test_api_errors_are_one_readable_line_per_model_and_the_last_image_stays(page):
    compare(page, None, "vae")
    before = loaded_images(page, "#latent")
    page.fill("#latent-x", "3")
    page.fill("#latent-y", "99999")
    page.click("#latent-go")
    settle(page)
    lines = page.text_content("#latent .error").splitlines()
    assert len(lines) == 2 and lines[0].startswith("gan: dim_y=99999") and lines[1].startswith("vae: dim_y=99999"), lines
    assert all("beyond the latent" in line and "409" not in line and "{" not in line for line in lines), lines
    assert loaded_images(page, "#latent") == before  # the last images are kept
    page.fill("#interp-seed-a", "-1")  # lerp and slerp fail alike: said once per model
    page.click("#interp-go")
    settle(page)
    lines = page.text_content("#interpolate .error").splitlines()
    assert [line.split(":")[0] for line in lines] == ["gan", "vae"] and "seed_a" in lines[0], lines
    assert len(loaded_images(page, "#interpolate")) == 4


def test_two_versions_of_one_model_each_say_their_error(page):
    compare(page, "vae", "vae", version_b="1")
    page.fill("#latent-y", "99999")
    page.click("#latent-go")
    settle(page)
    lines = page.text_content("#latent .error").splitlines()
    assert [line.split(":")[0] for line in lines] == ["vae", "vae v1"], lines
    assert len(loaded_images(page, "#latent")) == 2  # each keeps its own last image


def test_a_narrow_screen_scales_images_without_stretching_them(page):
    page.set_viewport_size(PHONE)
    page.select_option("#zoom", "1")  # a page opened on a phone starts at 1x
    page.fill("#interp-steps", "12")
    page.click("#interp-go")
    settle(page)
    shapes = page.eval_on_selector_all("#interpolate img[data-loaded='1']", """imgs => imgs.map(i =>
        [i.naturalWidth / i.naturalHeight, i.clientWidth / i.clientHeight, i.clientWidth])""")
    assert shapes and all(abs(drawn / natural - 1) < 0.03 and width <= PHONE["width"] for natural, drawn, width in shapes), shapes


def test_reconstructions_label_their_rows_and_give_each_face_its_psnr(page):
    page.fill("#recon-n", "3")
    page.fill("#recon-steps", "5")
    page.click("#recon-shipped")
    settle(page)
    rows = page.eval_on_selector_all("#reconstruct .labelled .rows span", "ss => ss.map(s => s.textContent)")
    psnr = page.eval_on_selector_all("#reconstruct .labelled .psnr span", "ss => ss.map(s => s.textContent)")
    assert rows == ["originals", "projected"] and len(psnr) == 3 and all(p.endswith(" dB") for p in psnr), (rows, psnr)
    heights = page.eval_on_selector_all("#reconstruct .labelled .rows span", "ss => ss.map(s => s.clientHeight)")
    image = page.eval_on_selector("#reconstruct img[data-loaded='1']", "i => i.clientHeight")
    assert abs(sum(heights) - image) <= 2  # each label sits beside its row
    page.select_option("#model-a", "vae")
    settle(page)
    rows = page.eval_on_selector_all("#reconstruct .labelled .rows span", "ss => ss.map(s => s.textContent)")
    assert rows == ["originals", "reconstructed"]


def test_limits_are_shown_before_a_request_is_made(page, tmp_path):
    assert page.get_attribute("#recon-n", "max") == "8" and "at most 8" in page.text_content("#recon-limit")
    page.set_input_files("#recon-files", face_files(tmp_path, 9))
    assert "gan projects at most 8 faces" in page.text_content("#recon-problem")
    assert page.is_disabled("#recon-upload")
    page.select_option("#model-a", "vae")  # an encoder takes 64
    settle(page)
    assert page.get_attribute("#recon-n", "max") == "64" and not page.is_visible("#recon-problem")
    assert page.is_enabled("#recon-upload")


def test_a_long_projection_shows_an_estimate_and_can_be_cancelled(page, server):
    def cancelled():
        metrics = httpx.get(f"{server.url}/metrics").text
        line = next((l for l in metrics.splitlines() if l.startswith('facegen_projections_total{model="gan",outcome="cancelled"}')), None)
        return float(line.split()[-1]) if line else 0.0

    before, shown = cancelled(), loaded_images(page, "#reconstruct")
    page.fill("#recon-n", "2")
    page.fill("#recon-steps", "1000")
    page.click("#recon-shipped")
    page.wait_for_selector("#reconstruct .progress button.cancel")
    assert "projecting 2 faces: about" in page.text_content("#reconstruct .progress")
    assert page.is_disabled("#recon-shipped")  # no second request while this one runs
    assert page.get_attribute("#reconstruct figure[data-state=loading] img", "alt") == ""  # a grey box, no broken icon
    page.wait_for_timeout(300)
    page.click("#reconstruct .progress button.cancel")
    settle(page)
    assert "gan: cancelled" in page.text_content("#reconstruct .error")
    assert loaded_images(page, "#reconstruct") == shown and page.is_enabled("#recon-shipped")
    assert wait_until(lambda: cancelled() > before), "the server did not stop the projection"


def test_attribute_sliders_edit_a_sample_and_an_uploaded_face(page, tmp_path):
    sliders = page.eval_on_selector_all("#attr-box input[type=range]", "els => els.map(e => e.dataset.attribute)")
    assert sliders == ["Male", "Smiling", "Twin"]
    page.fill("#attr-n", "2")
    page.dispatch_event("#attr-n", "change")
    settle(page)
    page.eval_on_selector("#attr-box input[data-attribute=Smiling]", "e => { e.value = '2'; e.dispatchEvent(new Event('change')); }")
    settle(page)
    assert errors(page) == "", errors(page)
    [edit] = loaded_images(page, "#attributes")
    assert "attribute=Smiling" in edit["permalink"] and "span=2" in edit["permalink"] and "n=2" in edit["permalink"]
    assert (edit["width"], edit["height"]) == (5 * 66 + 2, 2 * 66 + 2)  # 5 steps, a row per face
    page.select_option("#attr-hold", "Male")
    settle(page)
    assert "hold=Male" in loaded_images(page, "#attributes")[0]["permalink"]
    page.set_input_files("#recon-files", face_files(tmp_path, 1))
    page.select_option("#attr-source", "upload")
    settle(page)
    [mine] = loaded_images(page, "#attributes")
    assert "your face" in mine["caption"] and "projection PSNR" in mine["caption"] and "POST" in mine["caption"]


def test_zoom_is_pixel_exact_and_leaves_the_permalinks_alone(page):
    assert page.input_value("#zoom") == "2"  # a wide screen starts at 2x: 64 px faces are small there
    assert page.eval_on_selector("#sample img[data-loaded='1']", "img => img.clientWidth === 2 * img.naturalWidth")
    before = loaded_images(page, "#sample")[0]
    page.select_option("#zoom", "3")
    shown = page.eval_on_selector("#sample img[data-loaded='1']", "img => [img.clientWidth, img.naturalWidth, getComputedStyle(img).imageRendering]")
    assert shown[0] == 3 * shown[1] and shown[2] == "pixelated"
    assert loaded_images(page, "#sample")[0]["permalink"] == before["permalink"]
    page.click("#sample-next")  # a new image arrives zoomed too
    settle(page)
    assert page.eval_on_selector("#sample img[data-loaded='1']", "img => img.clientWidth === 3 * img.naturalWidth")


def test_the_api_docs_render_with_no_request_leaving_the_machine(browser, server):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    outside = []
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(server.url)
               else (outside.append(route.request.url), route.abort()))
    try:
        for path, rendered in (("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id]")):
            page.goto(f"{server.url}{path}")
            page.wait_for_selector(rendered, timeout=60_000)
        page.goto(f"{server.url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=60_000)
        paths = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        assert "/sample" in paths and "/edit" in paths
        # Swagger UI and ReDoc came from the service itself; ReDoc's bundle asks only for its own logo, a decoration
        assert all(url.startswith("https://cdn.redoc.ly/redoc/logo") for url in outside), outside
    finally:
        context.close()


def test_the_page_starts_from_the_apis_defaults_and_names_things_once(page, server):
    schema = httpx.get(f"{server.url}/openapi.json").json()
    sample = {p["name"]: p["schema"].get("default") for p in schema["paths"]["/sample"]["get"]["parameters"]}
    assert page.input_value("#sample-n") == str(sample["n"])  # 64 on both
    assert page.input_value("#recon-steps") == ""  # empty: the API chooses (200, or 20 from an encoder)
    assert "steps=" not in loaded_images(page, "#reconstruct")[0]["permalink"]
    assert page.eval_on_selector_all("#model-a option", "os => os.map(o => o.textContent)")[:1] != ["gan (gan)"]
    assert "gan" in page.eval_on_selector_all("#model-a option", "os => os.map(o => o.textContent)")
    page.select_option("#model-a", "vae")
    settle(page)
    versions = page.eval_on_selector_all("#version-a option", "os => os.map(o => o.textContent)")
    assert versions[0].startswith("latest (v") and versions[0][len("latest ("):-1] not in versions[1:], versions


def test_enter_menus_and_sliders_act_at_once(page):
    page.fill("#sample-seed", "7")
    page.press("#sample-seed", "Enter")  # no click on Sample
    settle(page)
    assert "seed=7" in loaded_images(page, "#sample")[0]["permalink"]
    page.select_option("#pca-x", "2")  # no click on Show
    settle(page)
    assert "pc_x=2" in loaded_images(page, "#pca")[0]["permalink"]
    # Dragging a slider redraws while it moves: only 'input' events, no 'change' (the release).
    page.eval_on_selector("#slider-box input", "s => { s.value = '1.5'; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("(document.querySelector('#sliders a.permalink') || {href: ''}).href.includes('coords=1.5')",
                           timeout=30_000)


def test_uploads_say_what_they_hold_and_flat_views_say_why(page, tmp_path):
    assert page.text_content("label:has(#interp-file-a)").strip().startswith("from")
    assert page.text_content("label:has(#interp-file-b)").strip().startswith("to")
    paths = face_files(tmp_path, 2)
    # A drop fills the file input too, so it no longer says "No file chosen".
    page.evaluate("""async (names) => {
        const dt = new DataTransfer();
        for (const name of names) dt.items.add(new File([new Uint8Array([137, 80, 78, 71])], name, { type: "image/png" }));
        document.getElementById("drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
    }""", [Path(p).name for p in paths])
    assert page.evaluate("document.getElementById('recon-files').files.length") == 2
    assert "face0.png" in page.text_content("#recon-chosen")
    assert "spreads meaning over all its dimensions" in page.text_content("#latent .note")


def test_the_sliders_cover_the_principal_directions_asked_for(page):
    page.fill("#slider-from", "2")
    page.fill("#slider-count", "3")
    page.press("#slider-count", "Tab")  # commits the value: a change event
    settle(page)
    labels = page.eval_on_selector_all("#slider-box input", "els => els.map(e => e.getAttribute('aria-label'))")
    assert labels == ["PC 2", "PC 3", "PC 4"], labels
    page.eval_on_selector("#slider-box input", "s => { s.value = '1.5'; s.dispatchEvent(new Event('input')); }")
    page.wait_for_function("(document.querySelector('#sliders a.permalink') || {href: ''}).href"
                           ".includes('coords=0%2C0%2C1.5%2C0%2C0')", timeout=30_000)


def test_the_study_section_shows_the_verdicts_and_a_claims_plot(page, server):
    assert page.is_visible("#study") and page.is_visible("#study-link")
    rows = page.eval_on_selector_all("#study-rows tr", "trs => trs.map(tr => [...tr.cells].map(c => c.textContent))")
    assert rows == [["1", "Variance sits in a few principal components", "vae: 80% at k = 43", "does not hold"],
                    ["7", "Training dynamics", "GAN in balance", "holds"]]
    page.click("#study-rows tr >> nth=0")
    page.wait_for_function("document.getElementById('study-plot').naturalWidth === 200")
    assert "k <= 20" in page.text_content("#study-caption")
    assert httpx.get(f"{server.url}/study/README.md").text.startswith("# The study")
