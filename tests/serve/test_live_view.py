"""The map page's live view (`GET /v1/events`) against real `heimdall serve` processes: off unless the service is
started with --live-view; then only answers asked to be published, computed (not from the cache), without ad-hoc
receiver positions; streams bounded per client and ended when idle."""

import json
import time

import httpx
import pytest

from serve_bodies import features_body
from service_process import running_service

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def live(model_file):
    flags = ["--live-view", "--max-event-streams-per-client", "2", "--event-idle-s", "3"]
    with running_service(model_file, *flags) as url:
        yield url


def localize(url, body, publish):
    r = httpx.post(f"{url}/v1/localize" + ("?publish=true" if publish else ""), json=body, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def events_until(url, marker_east_m):
    """The raw `data:` payloads of a new stream (the ring's replay, then what comes), up to and including the answer
    whose east_m is marker_east_m."""
    with httpx.Client(timeout=30) as client, client.stream("GET", f"{url}/v1/events") as stream:
        assert stream.status_code == 200
        payloads = []
        for line in stream.iter_lines():
            if line.startswith("data: "):
                payloads.append(line[6:])
                if json.loads(line[6:])["answer"]["east_m"] == pytest.approx(marker_east_m):
                    return payloads
    raise AssertionError("the stream ended before the marker answer")


def test_the_live_view_is_off_unless_the_service_is_started_with_it(model_file, store_rows):
    with running_service(model_file) as url:
        refused = httpx.get(f"{url}/v1/events", timeout=10)
        assert refused.status_code == 403 and refused.json()["detail"][0]["field"] == "events"
        assert '<meta name="heimdall-live-view" content="off">' in httpx.get(f"{url}/").text
        localize(url, features_body(store_rows, 0), publish=True)  # asking is harmless: nothing to publish to


def test_only_answers_asked_to_be_published_are_and_only_once(live, store_rows):
    private = localize(live, features_body(store_rows, 1), publish=False)
    asked = localize(live, features_body(store_rows, 2), publish=True)
    for _ in range(20):  # the same request again and again: answered from the cache, never published again
        assert localize(live, features_body(store_rows, 2), publish=True)["cached"]
    # receiver 0 given by a position 5 km from any table receiver: an ad-hoc receiver, labelled by its position
    table = httpx.get(f"{live}/v1/model").json()["receivers"]
    body = features_body(store_rows, 3)
    body["features"][0] = {
        "lat": table[0]["lat"] + 0.045,
        "lon": table[0]["lon"],
        "features": body["features"][0]["features"],
    }
    ad_hoc = localize(live, body, publish=True)
    (label,) = [r for r in ad_hoc["receivers_used"] if r not in {t["id"] for t in table}]
    marker = localize(live, features_body(store_rows, 4), publish=True)
    payloads = events_until(live, marker["east_m"])
    answers = [json.loads(p)["answer"] for p in payloads]
    assert [a["east_m"] for a in answers] == pytest.approx([asked["east_m"], ad_hoc["east_m"], marker["east_m"]])
    assert private["east_m"] not in [a["east_m"] for a in answers]
    assert label not in "".join(payloads)  # the ad-hoc receiver's position is not published
    assert "ad hoc" in answers[1]["receivers_used"] and {"id": "ad hoc"}.items() <= answers[1]["receivers"][0].items()


def test_one_client_holds_at_most_its_streams_and_an_idle_stream_ends(live):
    with httpx.Client(timeout=30) as client:
        with client.stream("GET", f"{live}/v1/events") as first, client.stream("GET", f"{live}/v1/events") as second:
            assert first.status_code == second.status_code == 200
            third = httpx.get(f"{live}/v1/events", timeout=10)
            assert third.status_code == 429 and "from 127.0.0.1, the limit is 2" in third.text
        t0 = time.time()
        with client.stream("GET", f"{live}/v1/events") as idle:
            for _ in idle.iter_lines():  # the replay, then nothing: the service ends it after --event-idle-s 3
                pass
        assert 2.5 <= time.time() - t0 < 15
