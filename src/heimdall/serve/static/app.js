// Heimdall's map page: the network, localization from dropped files, the live view and the model card.
// Plain JS on the service's own API, by relative URLs (works under a reverse proxy's path prefix).
"use strict";

(function () {
  const MAX_FILE_BYTES = 64 * 1024 * 1024; // a recording larger than this is refused before it is read
  const LIVE_ITEMS = 100; // entries the live list keeps
  const STYLE = {
    area: { color: "#1d3557", weight: 2, dashArray: "6 4", fill: false },
    region95: { className: "region-95", color: "#d62828", weight: 1.5, fillOpacity: 0.12, smoothFactor: 0 },
    region50: { className: "region-50", color: "#d62828", weight: 2, fillOpacity: 0.25, smoothFactor: 0 },
    ellipse95: { className: "ellipse-95", color: "#d62828", weight: 1.5, fillOpacity: 0.12 },
    ellipse50: { className: "ellipse-50", color: "#d62828", weight: 2, fillOpacity: 0.25 },
    graticule: { color: "#789", weight: 0.6, opacity: 0.6, interactive: false },
  };

  const $ = (id) => document.getElementById(id);
  const tileUrl = document.querySelector('meta[name="heimdall-tile-url"]').content;
  const liveView = document.querySelector('meta[name="heimdall-live-view"]').content === "on";
  const map = L.map("map", { zoomSnap: 0.25 }).setView([45, 8], 8);
  if (tileUrl) {
    L.tileLayer(tileUrl, { maxZoom: 19, attribution: "tiles: " + new URL(tileUrl.replace("{s}", "a")).host }).addTo(map);
  }
  L.control.scale({ imperial: false }).addTo(map);
  const graticule = L.layerGroup().addTo(map);
  const answerLayer = L.layerGroup().addTo(map);
  const receiverMarkers = {};
  let card = null;

  // ---- status line
  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  // ---- graticule: lat/lon lines at a step that gives a few lines across the view
  const STEPS = [20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005];
  function drawGraticule() {
    graticule.clearLayers();
    const b = map.getBounds();
    const span = Math.max(b.getNorth() - b.getSouth(), b.getEast() - b.getWest());
    const step = STEPS.find((s) => span / s >= 3) || STEPS[STEPS.length - 1];
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    const south = Math.max(-85, b.getSouth()), north = Math.min(85, b.getNorth());
    for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
      graticule.addLayer(L.polyline([[lat, b.getWest()], [lat, b.getEast()]], STYLE.graticule));
      graticule.addLayer(label([lat, b.getWest()], lat.toFixed(digits) + "°" + (lat >= 0 ? "N" : "S")));
    }
    for (let lon = Math.ceil(b.getWest() / step) * step; lon <= b.getEast(); lon += step) {
      graticule.addLayer(L.polyline([[south, lon], [north, lon]], STYLE.graticule));
      graticule.addLayer(label([south, lon], lon.toFixed(digits) + "°" + (lon >= 0 ? "E" : "W")));
    }
  }
  function label(latlng, text) {
    const icon = L.divIcon({ className: "graticule-label", html: text, iconSize: null, iconAnchor: [-2, 14] });
    return L.marker(latlng, { icon: icon, interactive: false, keyboard: false });
  }
  map.on("moveend", drawGraticule);

  // ---- geometry on the sphere (for distances and bearings shown to the user)
  const R_EARTH_M = 6371008.8;
  const rad = (d) => (d * Math.PI) / 180;
  function distanceBearing(from, to) {
    const [p1, p2, dl] = [rad(from.lat), rad(to.lat), rad(to.lon - from.lon)];
    const a = Math.sin((p2 - p1) / 2) ** 2 + Math.cos(p1) * Math.cos(p2) * Math.sin(dl / 2) ** 2;
    const y = Math.sin(dl) * Math.cos(p2);
    const x = Math.cos(p1) * Math.sin(p2) - Math.sin(p1) * Math.cos(p2) * Math.cos(dl);
    return { distance_m: 2 * R_EARTH_M * Math.asin(Math.sqrt(a)), bearing_deg: ((Math.atan2(y, x) * 180) / Math.PI + 360) % 360 };
  }
  // An ellipse's outline ([lat, lon]) around (lat, lon), on the local tangent plane: for drawing only.
  function ellipseRing(lat, lon, e) {
    const ring = [], t = rad(e.orientation_deg);
    for (let k = 0; k < 64; k++) {
      const u = (2 * Math.PI * k) / 64;
      const a = e.semi_major_m * Math.cos(u), b = e.semi_minor_m * Math.sin(u);
      const east = a * Math.sin(t) + b * Math.cos(t), north = a * Math.cos(t) - b * Math.sin(t);
      ring.push([lat + (north / R_EARTH_M) * 180 / Math.PI, lon + (east / (R_EARTH_M * Math.cos(rad(lat)))) * 180 / Math.PI]);
    }
    return ring;
  }

  // ---- the network and the model card
  async function loadModel() {
    const r = await fetch("v1/model");
    if (!r.ok) throw new Error("v1/model answered " + r.status);
    card = await r.json();
    $("model-name").textContent = `${card.name} ${card.version} · ${card.scenario ? card.scenario.name : ""}`;
    const area = L.geoJSON(card.area, { style: STYLE.area, interactive: false }).addTo(map);
    for (const rx of card.receivers) {
      const icon = L.divIcon({ className: "receiver-marker", iconSize: [14, 14], iconAnchor: [7, 7] });
      const m = L.marker([rx.lat, rx.lon], { icon: icon, title: rx.id }).addTo(map);
      m.getElement().dataset.receiver = rx.id;
      m.bindTooltip(text(`${rx.name} (${rx.id})`));
      receiverMarkers[rx.id] = m;
    }
    map.fitBounds(area.getBounds(), { padding: [10, 10], animate: false });
    drawGraticule();
    showCard(card);
  }

  function showCard(c) {
    const facts = {
      model: `${c.name} ${c.version}`,
      sha256: c.sha256,
      scenario: c.scenario && `${c.scenario.name} (${(c.scenario.frequency_hz / 1e6).toFixed(3)} MHz)`,
      "scenario sha256": c.scenario_sha256,
      "training data sha256": c.dataset_sha256,
      "MLflow run": c.mlflow_run_id,
      "heimdall version": c.heimdall_version,
      "source revision": c.source_revision,
      receivers: c.receivers.length + ` (at least ${c.min_receivers} per transmission)`,
    };
    const dl = $("card-facts");
    dl.replaceChildren();
    for (const [k, v] of Object.entries(facts)) {
      if (v === null || v === undefined || v === "") continue;
      dl.append(el("dt", k), el("dd", String(v)));
    }
    const calibration = $("card-calibration");
    calibration.replaceChildren();
    for (const [key, ideal] of Object.entries(c.calibration_ideal || {})) {
      const observed = (c.metrics || {})[key];
      if (typeof observed !== "number") continue;
      const bar = el("div", ""), fill = el("div", ""), mark = el("div", "");
      bar.className = "calibration-bar"; fill.className = "observed"; mark.className = "ideal";
      fill.style.width = Math.min(100, observed * 100) + "%";
      mark.style.left = ideal * 100 + "%";
      bar.append(fill, mark);
      const row = el("div", "");
      row.className = "calibration-row";
      row.append(el("span", `${key} ${(observed * 100).toFixed(1)} %`), bar, el("span", `ideal ${(ideal * 100).toFixed(1)} %`));
      calibration.append(row);
    }
    const table = $("card-metrics");
    table.replaceChildren();
    for (const [k, v] of flatten(c.metrics || {}, "")) table.append(row([k, formatValue(k, v)]));
  }

  function flatten(obj, prefix) {
    const out = [];
    for (const [k, v] of Object.entries(obj)) {
      if (v !== null && typeof v === "object" && !Array.isArray(v)) out.push(...flatten(v, prefix + k + "."));
      else out.push([prefix + k, v]);
    }
    return out;
  }
  function formatValue(key, v) {
    if (typeof v !== "number") return Array.isArray(v) ? v.join(", ") : String(v);
    if (key.endsWith("_m")) return (v / 1e3).toFixed(2) + " km";
    return Number.isInteger(v) ? String(v) : v.toPrecision(4);
  }
  // Leaflet puts string tooltips in as HTML; names come from the model, so they go in as text nodes.
  function text(t) {
    return el("span", t);
  }
  function el(tag, text) {
    const e = document.createElement(tag);
    e.textContent = text;
    return e;
  }
  function row(cells, header) {
    const tr = document.createElement("tr");
    for (const c of cells) tr.append(el(header ? "th" : "td", c));
    return tr;
  }

  // ---- an answer on the map and in the panel
  // A radio map's answer has `regions` (GeoJSON, often several islands) and `modes`: they are drawn as they are,
  // every vertex (smoothFactor 0: Leaflet would otherwise drop vertices closer than a pixel), with each mode's
  // mass beside it. Any other answer is drawn as its 50 % and 95 % ellipses.
  function showAnswer(answer) {
    answerLayer.clearLayers();
    const regions = answer.regions;
    let outline;
    if (regions && regions["0.95"] && regions["0.5"]) {
      outline = L.geoJSON(regions["0.95"], { style: STYLE.region95 });
      answerLayer.addLayer(outline);
      answerLayer.addLayer(L.geoJSON(regions["0.5"], { style: STYLE.region50 }));
    } else {
      outline = L.geoJSON(answer.geojson, { style: STYLE.ellipse95 });
      answerLayer.addLayer(outline);
      const e50 = (answer.ellipses || []).find((e) => e.probability === 0.5);
      if (e50) answerLayer.addLayer(L.polygon(ellipseRing(answer.lat, answer.lon, e50), STYLE.ellipse50));
    }
    const modes = answer.modes || [];
    for (const [k, mode] of modes.entries()) {
      const mass = `${(mode.probability * 100).toPrecision(2)} %`; // two digits: small modes are not "0 %"
      const icon = L.divIcon({ className: "mode-marker", html: el("span", mass), iconSize: [10, 10], iconAnchor: [5, 5] });
      answerLayer.addLayer(L.marker([mode.lat, mode.lon], { icon: icon, title: `mode ${k + 1}: ${mass}`, keyboard: false }));
    }
    const icon = L.divIcon({ className: "answer-marker", iconSize: [16, 16], iconAnchor: [8, 8] });
    answerLayer.addLayer(L.marker([answer.lat, answer.lon], { icon: icon, title: "estimated position (mean)" }));
    $("answer-summary").textContent = summary(answer, modes);
    $("answer-json").textContent = JSON.stringify(answer, null, 2);
    showReceivers(answer);
    const bounds = outline.getBounds();
    for (const mode of modes) bounds.extend(L.latLng(mode.lat, mode.lon));
    if (bounds.isValid()) map.fitBounds(bounds.extend(L.latLng(answer.lat, answer.lon)), { padding: [40, 40], maxZoom: 12, animate: false });
    window.heimdall.lastAnswer = answer;
  }

  function summary(answer, modes) {
    const model = answer.model ? ` · ${answer.model.name} ${answer.model.version}` : "";
    if (modes.length) {
      const best = modes[0];
      return `most probable: ${best.lat.toFixed(5)}, ${best.lon.toFixed(5)} (${(best.probability * 100).toPrecision(2)} %) · ` +
        `${modes.length} mode${modes.length > 1 ? "s" : ""} in the 95 % region · radio map used${model}`;
    }
    const e95 = (answer.ellipses || []).find((e) => e.probability === 0.95);
    return `${answer.lat.toFixed(5)}, ${answer.lon.toFixed(5)}` +
      (e95 ? ` · 95 % ellipse ${(e95.semi_major_m / 1e3).toFixed(1)} km` : "") +
      (answer.map ? ` · radio map ${answer.map}` : "") + model;
  }

  // Each receiver: whether it heard the transmission and its SNR (the answer's `receivers`, which the service
  // computes from the feature vectors or the raw IQ it was sent), and the distance and bearing to the estimate.
  function showReceivers(answer) {
    const reports = Object.fromEntries((answer.receivers || []).map((r) => [r.id, r]));
    const table = $("answer-receivers");
    table.replaceChildren(row(["receiver", "heard", "SNR dB", "distance km", "bearing °"], true));
    for (const rx of card.receivers) {
      const report = reports[rx.id];
      const heard = heardText(report);
      const snr = snrText(report);
      const db = distanceBearing(rx, answer);
      table.append(row([rx.name, heard, snr, (db.distance_m / 1e3).toFixed(1), db.bearing_deg.toFixed(0)]));
      const m = receiverMarkers[rx.id];
      if (m) {
        const yes = report !== undefined && report.heard !== false;
        m.getElement().classList.toggle("heard", yes);
        m.getElement().classList.toggle("silent", !yes);
        m.setTooltipContent(text(`${rx.name} (${rx.id}): ${heard}` + (snr !== "—" ? `, SNR ${snr} dB` : "")));
      }
    }
    for (const report of answer.receivers || []) {
      if (!receiverMarkers[report.id]) table.append(row([report.id + " (ad hoc)", heardText(report), snrText(report), "", ""]));
    }
  }
  function heardText(report) {
    if (report === undefined) return "not sent";
    return report.heard === null ? "power only" : report.heard ? "yes" : "no";
  }
  function snrText(report) {
    return report && typeof report.snr_db === "number" ? report.snr_db.toFixed(1) : "—";
  }

  // ---- localize from dropped or chosen files (published to the live view, when the service runs one)
  async function localize(request) {
    const batch = Array.isArray(request.transmissions);
    status("localizing…");
    const r = await fetch((batch ? "v1/localize/batch" : "v1/localize") + "?publish=true", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const detail = body && body.detail ? body.detail.map((d) => `${d.field}: ${d.message}`).join("; ") : r.statusText;
      throw new Error(`the service answered ${r.status}: ${detail}`);
    }
    const answer = batch ? body.results[0] : body;
    showAnswer(answer);
    status(batch ? `${body.results.length} answers; the first is shown` : "answered");
    return answer;
  }

  async function handleFiles(fileList) {
    const files = Array.from(fileList);
    try {
      const collection = files.find((f) => f.name.endsWith(".sigmf-collection"));
      if (collection) return await localize(await requestFromSigmf(collection, files));
      const json = files.find((f) => f.name.endsWith(".json"));
      if (json) return await localize(await readJson(json));
      throw new Error("drop a .sigmf-collection with its recordings, or a .json request body");
    } catch (err) {
      status(err.message, true);
    }
  }

  async function readJson(file) {
    if (file.size > MAX_FILE_BYTES) throw new Error(`${file.name}: larger than ${MAX_FILE_BYTES / 2 ** 20} MiB`);
    try {
      return JSON.parse(await file.text());
    } catch (err) {
      throw new Error(`${file.name}: not valid JSON (${err.message})`);
    }
  }

  // A SigMF collection and its recordings → the `iq` request: each recording's samples sent as they are stored
  // (base64); the service decodes the sample types it reads (cf32_le, ci16_le, ci8, cu8) and refuses others.
  const DATATYPES = ["cf32_le", "ci16_le", "ci8", "cu8"];
  async function requestFromSigmf(collectionFile, files) {
    const doc = await readJson(collectionFile);
    const streams = doc.collection && doc.collection["core:streams"];
    if (!Array.isArray(streams) || streams.length === 0) throw new Error(`${collectionFile.name}: collection.core:streams: expected a list of recordings`);
    const byName = Object.fromEntries(files.map((f) => [f.name, f]));
    const known = new Set(card.receivers.map((r) => r.id));
    const iq = [];
    for (const [i, stream] of streams.entries()) {
      const name = stream && stream.name;
      const metaFile = byName[name + ".sigmf-meta"], dataFile = byName[name + ".sigmf-data"];
      if (!metaFile || !dataFile) throw new Error(`${collectionFile.name}: core:streams[${i}]: drop ${name}.sigmf-meta and ${name}.sigmf-data too`);
      const meta = await readJson(metaFile);
      const g = meta.global || {}, capture = (meta.captures || [])[0] || {};
      const datatype = g["core:datatype"];
      if (!DATATYPES.includes(datatype)) throw new Error(`${metaFile.name}: global.core:datatype ${JSON.stringify(datatype)} is not supported (expected one of ${DATATYPES.join(", ")})`);
      if (dataFile.size > MAX_FILE_BYTES) throw new Error(`${dataFile.name}: larger than ${MAX_FILE_BYTES / 2 ** 20} MiB`);
      const item = {
        datatype: datatype,
        sample_rate_hz: g["core:sample_rate"],
        center_frequency_hz: capture["core:frequency"],
        samples_base64: base64(await dataFile.arrayBuffer()),
      };
      const id = g["heimdall:receiver_id"];
      const where = (capture["core:geolocation"] || g["core:geolocation"] || {}).coordinates;
      if (id && known.has(id)) item.id = id;
      else if (Array.isArray(where)) [item.lon, item.lat] = where;
      else throw new Error(`${metaFile.name}: neither a heimdall:receiver_id of the model nor core:geolocation`);
      if (typeof g["heimdall:power_calibration_dbm"] === "number") item.full_scale_dbm = g["heimdall:power_calibration_dbm"];
      iq.push(item);
    }
    return { iq: iq };
  }

  function base64(buffer) {
    const bytes = new Uint8Array(buffer), chunks = [];
    for (let i = 0; i < bytes.length; i += 0x8000) chunks.push(String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000)));
    return btoa(chunks.join(""));
  }

  document.addEventListener("dragover", (e) => { e.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    document.body.classList.remove("dragging");
    handleFiles(e.dataTransfer.files);
  });
  $("file-input").addEventListener("change", (e) => handleFiles(e.target.files));

  // ---- live view (only when the service runs with --live-view): the answers published to it, as server-sent
  // events; the service ends an idle stream now and then and EventSource reconnects
  function startLive() {
    if (!liveView) return;
    $("live").hidden = false;
    const source = new EventSource("v1/events");
    source.onopen = () => ($("live-state").textContent = "· connected");
    source.onerror = () => ($("live-state").textContent = "· reconnecting…");
    source.onmessage = (e) => {
      const event = JSON.parse(e.data);
      const a = event.answer;
      const item = el("li", `${new Date(event.received_unix * 1000).toLocaleTimeString()} · ${a.lat.toFixed(4)}, ${a.lon.toFixed(4)} · ${(a.receivers_used || []).length} receivers`);
      item.dataset.seq = event.seq;
      item.addEventListener("click", () => showAnswer(a));
      const list = $("live-list");
      list.prepend(item);
      while (list.children.length > LIVE_ITEMS) list.lastChild.remove();
    };
  }

  window.heimdall = { map: map, showAnswer: showAnswer, lastAnswer: null };
  loadModel()
    .then(startLive)
    .catch((err) => status(`cannot load the model: ${err.message}`, true));
})();
