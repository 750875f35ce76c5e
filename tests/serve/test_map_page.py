"""The map page at `GET /` in headless Chromium against a real `heimdall serve` process, and its event stream."""

import base64
import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from browser import SCREENSHOT_DIR, chromium_context
from heimdall.serve.page import STATIC, content_security_policy, tile_origin
from serve_bodies import features_body, sigmf_collection
from service_process import free_port, running_service

PAGE_WEIGHT_LIMIT_BYTES = 500 * 1024


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium_context(tmp_path_factory.mktemp("chromium-profile")) as context:
        yield context


@pytest.fixture(scope="module")
def server(model_file):
    with running_service(model_file, "--live-view", "--events-size", "3", "--max-event-streams", "3") as url:
        yield url


def open_page(browser, url):
    """The page at url, loaded with the model's receivers drawn (and its live view connected, when the service runs
    one); (page, console messages, responses)."""
    page = browser.new_page()
    messages, responses = [], []
    page.on("console", lambda m: messages.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: messages.append(f"pageerror: {e}"))
    page.on("response", lambda r: responses.append(r))
    page.goto(url + "/")
    page.wait_for_selector(".receiver-marker")
    if page.get_attribute('meta[name="heimdall-live-view"]', "content") == "on":
        page.locator("#live-state", has_text="connected").wait_for()  # (the page's CSP forbids wait_for_function)
    return page, messages, responses


def projected_px(page, lat_lon):
    """Where Leaflet projects each (lat, lon) on the page: float [n, 2] client pixels."""
    return np.array(
        page.evaluate(
            """(points) => {
                const r = document.getElementById('map').getBoundingClientRect();
                return points.map((ll) => {
                    const p = window.heimdall.map.latLngToContainerPoint(ll);
                    return [p.x + r.left, p.y + r.top];
                });
            }""",
            [list(ll) for ll in lat_lon],
        )
    ).reshape(-1, 2)


def marker_offset_px(page, lat, lon, selector=".answer-marker"):
    """Pixels between the centre of the drawn marker and where Leaflet projects (lat, lon)."""
    box = page.locator(selector).bounding_box()
    expected = projected_px(page, [(lat, lon)])[0]
    return float(np.hypot(box["x"] + box["width"] / 2 - expected[0], box["y"] + box["height"] / 2 - expected[1]))


def drawn_rings_px(page, selector):
    """The rings of the SVG paths matching selector (one per `M` of their outlines): client pixels [[x, y], ...]."""
    rings = page.evaluate(
        """(selector) => Array.from(document.querySelectorAll(selector)).flatMap((path) => {
            const ctm = path.getScreenCTM(), svg = path.ownerSVGElement;
            return path.getAttribute('d').split('M').filter((s) => s.trim()).map((ring) =>
                ring.replace(/z\\s*$/i, '').split('L').map((xy) => {
                    const [x, y] = xy.trim().split(/\\s+/).map(Number);
                    const p = svg.createSVGPoint();
                    p.x = x;
                    p.y = y;
                    const q = p.matrixTransform(ctm);
                    return [q.x, q.y];
                }));
        })""",
        selector,
    )
    return [np.array(r, float) for r in rings]


def geometry_rings(geometry):
    """Every ring (outer rings and holes) of a GeoJSON Polygon or MultiPolygon, as (lat, lon) without the closing
    vertex."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [[(lat, lon) for lon, lat in ring[:-1]] for rings in polygons for ring in rings]


def drop(page, files: dict[str, bytes]):
    """Drop the files (name → bytes) on the page, as a user dragging them from a file manager."""
    page.evaluate(
        """(files) => {
            const dt = new DataTransfer();
            for (const [name, b64] of Object.entries(files)) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], name));
            }
            document.body.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        {name: base64.b64encode(data).decode() for name, data in files.items()},
    )


@pytest.fixture(scope="module")
def collection(server, store_rows, tmp_path_factory):
    """Test transmission 0 as a SigMF collection (ci16_le) of every receiver: {file name: bytes}."""
    folder = tmp_path_factory.mktemp("fox")
    receivers = {r["id"]: r for r in httpx.get(f"{server}/v1/model").json()["receivers"]}
    sigmf_collection(
        folder, "fox", store_rows, 0, [(receivers[i]["lat"], receivers[i]["lon"]) for i in store_rows["ids"]]
    )
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def api_answer_for(server, collection):
    """The JSON API's answer to the iq request the collection stands for (built here independently of the page)."""
    iq = []
    for stream in json.loads(collection["fox.sigmf-collection"])["collection"]["core:streams"]:
        name = stream["name"] + ".sigmf-meta"
        meta = json.loads(collection[name])
        g = meta["global"]
        iq.append(
            {
                "id": g["heimdall:receiver_id"],
                "datatype": g["core:datatype"],
                "sample_rate_hz": g["core:sample_rate"],
                "center_frequency_hz": meta["captures"][0]["core:frequency"],
                "full_scale_dbm": g["heimdall:power_calibration_dbm"],
                "samples_base64": base64.b64encode(collection[name.replace("-meta", "-data")]).decode(),
            }
        )
    r = httpx.post(f"{server}/v1/localize", json={"iq": iq}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.system
def test_page_loads_offline_without_console_errors_showing_every_receiver(browser, server):
    page, messages, responses = open_page(browser, server)
    receivers = httpx.get(f"{server}/v1/model").json()["receivers"]
    drawn = page.eval_on_selector_all(".receiver-marker", "els => els.map(e => e.dataset.receiver)")
    assert sorted(drawn) == sorted(r["id"] for r in receivers)
    assert page.locator(".graticule-label").count() >= 4  # lat/lon graticule
    assert page.locator(".leaflet-control-scale-line").inner_text().strip()  # a scale bar
    assert page.locator("path.leaflet-interactive, path").count() >= 5  # the area outline and graticule lines
    assert page.locator(".leaflet-tile").count() == 0  # no basemap: nothing but the service was asked
    assert all(r.url.startswith(server) for r in responses)
    assert messages == []
    weight = sum(len(r.body()) for r in responses if r.url != f"{server}/v1/events")
    assert weight <= PAGE_WEIGHT_LIMIT_BYTES, f"page weight {weight} bytes"
    index = httpx.get(f"{server}/")
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert httpx.get(f"{server}/static/../runtime.py").status_code == 404
    assert httpx.get(f"{server}/static/app.js").headers["content-type"].startswith("text/javascript")
    page.close()


@pytest.mark.system
def test_dropped_collection_answer_sits_where_the_api_puts_it(browser, server, collection, tmp_path):
    expected = api_answer_for(server, collection)
    page, messages, _ = open_page(browser, server)
    drop(page, collection)
    page.wait_for_selector(".answer-marker")
    shown = page.evaluate("window.heimdall.lastAnswer")
    assert (shown["lat"], shown["lon"]) == pytest.approx((expected["lat"], expected["lon"]), abs=1e-9)
    assert marker_offset_px(page, expected["lat"], expected["lon"]) <= 1.5
    assert page.locator("path.ellipse-95").count() == page.locator("path.ellipse-50").count() == 1
    assert page.locator("path.region-95, .mode-marker").count() == 0  # no radio map: the ellipses only
    assert_receiver_table(page, expected)
    assert messages == []
    page.close()


def assert_receiver_table(page, expected):
    """The page's receiver table shows, for each receiver of the API's answer, its SNR and whether it heard."""
    reports = expected["receivers"]
    assert [r["id"] for r in reports] == expected["receivers_used"]
    assert all(isinstance(r["snr_db"], float) for r in reports)  # an iq request: SNR computed by the service
    rows = page.locator("#answer-receivers tr").all()[1:]  # after the header
    cells = [[td.inner_text() for td in tr.locator("td").all()] for tr in rows]
    assert len(cells) == len(reports)  # one row per receiver of the model, all of them sent
    names = {r["id"]: r["name"] for r in httpx.get(f"{page.url}v1/model").json()["receivers"]}
    shown = {row[0]: row for row in cells}
    assert set(shown) == {names[r["id"]] for r in reports}
    for r in reports:
        heard, snr = shown[names[r["id"]]][1:3]
        assert heard == ("yes" if r["heard"] else "no")
        assert float(snr) == pytest.approx(r["snr_db"], abs=0.05 + 1e-9)  # shown to 0.1 dB
    assert page.locator(".receiver-marker.heard").count() == sum(r["heard"] for r in reports)
    assert page.locator(".receiver-marker.silent").count() == sum(not r["heard"] for r in reports)


@pytest.fixture(scope="module")
def map_server(map_model_file):
    with running_service(map_model_file) as url:
        yield url


@pytest.mark.system
def test_map_answer_draws_the_regions_and_modes_where_the_api_puts_them(
    browser, map_server, collection, store_rows, tmp_path
):
    expected = api_answer_for(map_server, collection)
    assert expected["map"] == "used" and expected["modes"]
    page, messages, _ = open_page(browser, map_server)
    drop(page, collection)
    page.wait_for_selector(".mode-marker")
    for key, selector in (("0.5", "path.region-50"), ("0.95", "path.region-95")):
        api_rings = geometry_rings(expected["regions"][key])
        drawn = drawn_rings_px(page, selector)
        assert len(drawn) == len(api_rings), key
        for ring in api_rings:  # each ring of the answer drawn vertex for vertex, in the right place
            where = projected_px(page, ring)
            matches = [
                d
                for d in drawn
                if len(d) == len(where)
                and np.linalg.norm(d[:, None] - where[None], axis=-1).min(axis=1).max() <= 1.5
                and np.linalg.norm(d[:, None] - where[None], axis=-1).min(axis=0).max() <= 1.5
            ]
            assert matches, f"region {key}: a ring of {len(ring)} vertices is not drawn where the API puts it"
    assert page.locator("path.ellipse-95, path.ellipse-50").count() == 0  # the regions instead of the ellipses
    markers = page.locator(".mode-marker")
    assert markers.count() == len(expected["modes"])
    for k, mode in enumerate(expected["modes"]):
        assert marker_offset_px(page, mode["lat"], mode["lon"], f".mode-marker >> nth={k}") <= 1.5
        shown = markers.nth(k).inner_text()
        assert shown.endswith(" %") and float(shown[:-2]) == pytest.approx(mode["probability"] * 100, rel=0.05)
    assert marker_offset_px(page, expected["lat"], expected["lon"]) <= 1.5  # the mean, as for any answer
    assert f"{len(expected['modes'])} mode" in page.inner_text("#answer-summary")
    assert_receiver_table(page, expected)
    assert messages == []
    (Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path).mkdir(exist_ok=True)
    shot = (Path(SCREENSHOT_DIR) if SCREENSHOT_DIR else tmp_path) / "map-page.png"
    page.screenshot(path=shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.close()


@pytest.mark.system
def test_dropped_json_body_and_bad_drops(browser, server, store_rows, collection):
    page, _, _ = open_page(browser, server)
    body = features_body(store_rows, 1)
    expected = httpx.post(f"{server}/v1/localize", json=body, timeout=30).json()
    drop(page, {"request.json": json.dumps(body).encode()})
    page.wait_for_selector(".answer-marker")
    assert marker_offset_px(page, expected["lat"], expected["lon"]) <= 1.5
    snr = page.locator("#answer-receivers tr").nth(1).locator("td").nth(2).inner_text()
    assert float(snr) == pytest.approx(expected["receivers"][0]["snr_db"], abs=0.05 + 1e-9)  # from the features sent
    incomplete = {k: v for k, v in collection.items() if not k.endswith(f"{store_rows['ids'][0]}.sigmf-data")}
    drop(page, incomplete)
    page.wait_for_selector("#status.error")
    assert f"fox_{store_rows['ids'][0]}.sigmf-data" in page.inner_text("#status")
    meta_name = f"fox_{store_rows['ids'][1]}.sigmf-meta"
    odd = dict(collection)
    meta = json.loads(odd[meta_name])
    meta["global"]["core:datatype"] = "ri16_le"
    odd[meta_name] = json.dumps(meta).encode()
    drop(page, odd)
    page.locator("#status", has_text=meta_name).wait_for()
    assert "not supported" in page.inner_text("#status")
    page.close()


@pytest.mark.system
def test_live_view_shows_a_localization_made_by_another_client(browser, server, store_rows):
    page, messages, _ = open_page(browser, server)
    answer = httpx.post(f"{server}/v1/localize?publish=true", json=features_body(store_rows, 4), timeout=30).json()
    item = page.locator("#live-list li", has_text=f"{answer['lat']:.4f}, {answer['lon']:.4f}").first
    item.wait_for()
    item.click()
    page.wait_for_selector(".answer-marker")
    assert marker_offset_px(page, answer["lat"], answer["lon"]) <= 1.5
    # what another page localizes is published too: the page asks for its own answers to be
    other, _, _ = open_page(browser, server)
    drop(other, {"request.json": json.dumps(features_body(store_rows, 6)).encode()})
    other.wait_for_selector(".answer-marker")
    dropped = other.evaluate("window.heimdall.lastAnswer")
    page.locator("#live-list li", has_text=f"{dropped['lat']:.4f}, {dropped['lon']:.4f}").first.wait_for()
    assert messages == []
    other.close()
    page.close()


@pytest.mark.system
def test_page_draws_the_network_when_the_tile_server_is_unreachable(browser, model_file):
    dead = f"http://127.0.0.1:{free_port()}/{{z}}/{{x}}/{{y}}.png"
    with running_service(model_file, "--tile-url", dead) as url:
        assert tile_origin(dead) in httpx.get(f"{url}/").headers["content-security-policy"]
        page, messages, _ = open_page(browser, url)
        assert page.locator(".receiver-marker").count() == len(httpx.get(f"{url}/v1/model").json()["receivers"])
        assert not page.locator("#live").is_visible()  # no --live-view: no live list, no event stream
        assert page.locator(".graticule-label").count() >= 4
        assert page.locator(".leaflet-tile").count() > 0  # it tried the basemap
        assert all("ERR_CONNECTION_REFUSED" in m or "Failed to load resource" in m for m in messages)
        page.close()


@pytest.mark.system
def test_event_stream_replays_the_ring_and_bounds_streams(server, store_rows):
    for k in range(5):
        r = httpx.post(f"{server}/v1/localize?publish=true", json=features_body(store_rows, k), timeout=30)
        assert r.status_code == 200
    with httpx.Client(timeout=10) as client, client.stream("GET", f"{server}/v1/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        assert events.headers["x-accel-buffering"] == "no"
        lines = events.iter_lines()  # one iterator kept open: dropping it would close the stream

        def next_event():
            return json.loads(next(line for line in lines if line.startswith("data: "))[6:])

        data = [next_event() for _ in range(3)]  # only the last --events-size answers are kept
        assert [d["seq"] for d in data] == list(range(data[0]["seq"], data[0]["seq"] + 3))
        last = httpx.post(f"{server}/v1/localize?publish=true", json=features_body(store_rows, 5), timeout=30).json()
        pushed = next_event()
        assert pushed["seq"] == data[-1]["seq"] + 1 and pushed["answer"]["east_m"] == pytest.approx(last["east_m"])
        with (
            client.stream("GET", f"{server}/v1/events") as second,
            client.stream("GET", f"{server}/v1/events") as third,
        ):
            assert second.status_code == third.status_code == 200
            refused = httpx.get(f"{server}/v1/events", timeout=10)
            assert refused.status_code == 429 and refused.json()["detail"][0]["field"] == "events"
    assert httpx.get(f"{server}/healthz").status_code == 200


def test_static_files_fit_the_page_weight_and_the_csp_names_the_tile_server():
    total = sum(p.stat().st_size for p in Path(str(STATIC)).rglob("*") if p.suffix in {".html", ".js", ".css", ".png"})
    assert total <= PAGE_WEIGHT_LIMIT_BYTES, total
    assert (Path(str(STATIC)) / "vendor" / "leaflet" / "LICENSE").is_file()
    csp = content_security_policy("https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png")
    assert "img-src 'self' data: https://*.tile.openstreetmap.org;" in csp
    for bad in ("javascript:alert(1)/{z}/{x}/{y}", "https://tiles.example/{z}/{x}.png", "https://a b;c/{z}/{x}/{y}"):
        with pytest.raises(ValueError):
            tile_origin(bad)
