// vtok's page: one request per image brings every prefix k = 1..K (pixels, bytes, PSNR, SSIM),
// so moving the slider only redraws. Plain JS, no build step, same-origin requests only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, effort: 0, info: null, blob: null, result: null, pixels: null, codec: "", codecResult: null, busy: 0, analysed: 0 };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function modelQuery() {
  return state.model ? `model=${encodeURIComponent(state.model)}` : "";
}

async function start() {
  const info = await (await api("/api/models")).json();
  state.info = info;
  const select = $("model");
  for (const m of info.models) select.add(new Option(`${m.name} (${m.num_tokens} tokens, ${m.image_size} px)`, m.name));
  state.model = info.models[0].name;
  $("model-pick").hidden = info.models.length < 2;
  select.addEventListener("change", () => { state.model = select.value; if (state.blob) analyse(state.blob); });
  $("effort").addEventListener("change", () => { state.effort = +$("effort").value; if (state.blob) analyse(state.blob); });
  for (const button of document.querySelectorAll(".segmented button")) {
    const codec = button.dataset.codec;
    if (codec && !info.codecs.includes(codec)) { button.disabled = true; button.title = "this server cannot write it"; }
    button.addEventListener("click", () => chooseCodec(codec));
  }
  if (info.lm) setUpGenerate(info.lm);
  const samples = await (await api("/api/samples")).json();
  for (const s of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.title = s.name;
    button.innerHTML = `<img alt="${s.name}" src="${s.url}">`;
    button.addEventListener("click", async () => {
      markSample(button);
      analyse(await (await api(s.url)).blob());
    });
    $("samples").append(button);
  }
  wireInputs();
  document.body.dataset.state = "idle";
  setStatus("pick an image, drop one, or try a sample");
  if (samples.length) $("samples").firstElementChild.click();
}

function markSample(button) {
  for (const b of $("samples").children) b.classList.toggle("on", b === button);
}

function wireInputs() {
  $("file-input").addEventListener("change", (e) => {
    if (e.target.files.length) { markSample(null); analyse(e.target.files[0]); }
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) { markSample(null); analyse(e.dataTransfer.files[0]); }
  });
  $("k-slider").addEventListener("input", render);
  $("download").addEventListener("click", download);
}

async function analyse(blob) {
  state.blob = blob;
  state.codecResult = null;
  const ticket = ++state.busy;
  document.body.dataset.state = "loading";
  setStatus(state.effort ? `searching tokens at effort ${state.effort}, then decoding every prefix...` : "encoding and decoding every prefix...");
  const started = performance.now();
  try {
    const response = await api(`/api/prefixes?pixels=raw&effort=${state.effort}&${modelQuery()}`, { method: "POST", body: blob });
    const result = await response.json();
    if (ticket !== state.busy) return; // a newer image was chosen meanwhile
    state.result = result;
    state.pixels = Uint8Array.from(atob(result.pixels), (c) => c.charCodeAt(0));
    $("original").src = result.original;
    $("original-size").textContent = `${result.image_size} x ${result.image_size}`;
    const slider = $("k-slider");
    slider.max = result.num_tokens;
    slider.disabled = false;
    if (+slider.value > result.num_tokens) slider.value = result.num_tokens;
    $("k-max").textContent = result.num_tokens;
    $("download").disabled = false;
    render();
    if (state.codec) await loadCodec();
    document.body.dataset.analysed = String(++state.analysed);
    document.body.dataset.state = "ready";
    const how = result.effort ? ` (tokens searched at effort ${result.effort})` : "";
    setStatus(`ready: all ${result.num_tokens} prefixes in ${Math.round(performance.now() - started)} ms${how}; move the slider`);
  } catch (e) {
    if (ticket !== state.busy) return;
    document.body.dataset.state = "error";
    setStatus(e.message, true);
  }
}

function render() {
  const r = state.result;
  if (!r) return;
  const k = +$("k-slider").value;
  const s = r.image_size;
  const row = r.prefixes[k - 1];
  const canvas = $("recon");
  canvas.width = canvas.height = s;
  const image = new ImageData(s, s);
  const from = state.pixels.subarray((k - 1) * s * s * 3, k * s * s * 3);
  for (let i = 0, j = 0; i < from.length; i += 3, j += 4) {
    image.data[j] = from[i]; image.data[j + 1] = from[i + 1]; image.data[j + 2] = from[i + 2]; image.data[j + 3] = 255;
  }
  canvas.getContext("2d").putImageData(image, 0, 0);
  $("k-value").textContent = k;
  $("caption-k").textContent = k;
  $("stat-tokens").textContent = k;
  $("stat-bytes").textContent = row.bytes;
  $("stat-bpp").textContent = `${((row.bytes * 8) / (s * s)).toFixed(3)} bits/pixel`;
  $("stat-psnr").textContent = row.psnr.toFixed(2);
  $("stat-ssim").textContent = row.ssim.toFixed(3);
  $("download").textContent = `Download .vtok (${row.bytes} bytes)`;
  document.body.dataset.k = k;
  renderCodec(k);
  drawChart(k);
}

function chooseCodec(codec) {
  state.codec = codec;
  for (const b of document.querySelectorAll(".segmented button")) b.classList.toggle("on", b.dataset.codec === codec);
  state.codecResult = null;
  if (codec && state.blob) loadCodec(); else render();
}

async function loadCodec() {
  const codec = state.codec;
  $("codec-figure").hidden = false;
  $("codec-caption").textContent = `${codec.toUpperCase()}: searching its settings for every budget...`;
  try {
    const effort = state.result ? state.result.effort : 0; // the budgets of the tokens shown
    const response = await api(`/api/equal-bytes?codec=${codec}&effort=${effort}&${modelQuery()}`, { method: "POST", body: state.blob });
    const result = await response.json();
    if (codec === state.codec) { state.codecResult = result; render(); }
  } catch (e) {
    setStatus(e.message, true);
  }
}

function renderCodec(k) {
  const figure = $("codec-figure");
  const c = state.codecResult;
  figure.hidden = !state.codec;
  if (!c || c.codec !== state.codec) return;
  const name = c.codec === "jpeg" ? "JPEG" : c.codec === "webp" ? "WebP" : "AVIF";
  const row = c.prefixes[k - 1];
  const bytes = state.result.prefixes[k - 1].bytes;
  $("codec-miss").hidden = !!row;
  $("codec-image").style.visibility = row ? "visible" : "hidden";
  if (row) {
    $("codec-image").src = row.image;
    const size = row.scale < 1 ? ` at ${Math.round(row.scale * state.result.image_size)} px, enlarged` : "";
    $("codec-caption").textContent = `${name} q${row.quality}${size}: ${row.bytes} B, ${row.psnr.toFixed(2)} dB, SSIM ${row.ssim.toFixed(3)}`;
  } else {
    $("codec-miss").textContent = `${name} cannot reach ${bytes} bytes: its smallest file of this image is ${c.smallest_bytes} bytes`;
    $("codec-caption").textContent = `${name} at ${bytes} bytes: cannot reach`;
  }
}

function drawChart(k) {
  const r = state.result;
  const svg = $("chart");
  const w = 240, h = 84, left = 26, bottom = 14, top = 8;
  const psnrs = r.prefixes.map((p) => p.psnr);
  const codecRows = state.codecResult && state.codecResult.codec === state.codec ? state.codecResult.prefixes : [];
  const all = psnrs.concat(codecRows.filter(Boolean).map((p) => p.psnr));
  const lo = Math.floor(Math.min(...all)), hi = Math.ceil(Math.max(...all));
  const x = (i) => left + ((w - left - 6) * i) / (r.num_tokens - 1 || 1);
  const y = (v) => top + (h - top - bottom) * (1 - (v - lo) / (hi - lo || 1));
  const path = psnrs.map((v, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
  const dots = codecRows.map((p, i) => (p ? `<circle class="codec" cx="${x(i)}" cy="${y(p.psnr)}" r="1.6"/>` : "")).join("");
  svg.innerHTML =
    `<text x="2" y="${top + 6}">${hi}</text><text x="2" y="${h - bottom}">${lo}</text>` +
    `<text x="${left}" y="${h - 2}">PSNR (dB) by tokens${codecRows.some(Boolean) ? ", dots: " + state.codec.toUpperCase() : ""}</text>` +
    `<path class="curve" d="${path}"/>${dots}` +
    `<circle class="marker" cx="${x(k - 1)}" cy="${y(psnrs[k - 1])}" r="4"/>`;
}

function dataUrlToBlob(url) {
  const [head, body] = url.split(",");
  const bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: head.slice(5).split(";")[0] });
}

async function download() {
  const k = +$("k-slider").value;
  try {
    // the model's square crop, so that the file holds exactly the tokens and bytes shown; with an
    // effort, the file's tokens are searched for this k alone (a little better than the row shown)
    const body = dataUrlToBlob(state.result.original);
    const effort = state.result.effort ? `&effort=${state.result.effort}` : "";
    const response = await api(`/api/compress?tokens=${k}${effort}&${modelQuery()}`, { method: "POST", body });
    const blob = await response.blob();
    if (state.result.effort) setStatus(`downloaded: ${blob.size} bytes, tokens searched for k = ${k} at effort ${state.result.effort}`);
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `vtok_k${k}.vtok`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (e) {
    setStatus(e.message, true);
  }
}

function setUpGenerate(lm) {
  $("generate-panel").hidden = false;
  $("gen-n").max = state.info.limits.max_generate;
  if (lm.classes.length) {
    $("gen-class-label").hidden = false;
    lm.classes.forEach((name, i) => $("gen-class").add(new Option(name, i)));
  }
  $("generate-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = {
      n: +$("gen-n").value,
      temperature: +$("gen-temperature").value,
      cfg: +$("gen-cfg").value,
      seed: +$("gen-seed").value,
    };
    if (lm.classes.length) body.class_label = +$("gen-class").value;
    setStatus("sampling...");
    try {
      const response = await api("/api/generate", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const result = await response.json();
      const strips = $("gen-strips");
      strips.innerHTML = "";
      for (const sample of result.samples) {
        const row = document.createElement("div");
        row.className = "strip";
        sample.images.forEach((src, i) => {
          const figure = document.createElement("figure");
          figure.innerHTML = `<img alt="sample at k=${result.prefix_lengths[i]}" src="${src}"><figcaption>k=${result.prefix_lengths[i]}</figcaption>`;
          row.append(figure);
        });
        strips.append(row);
      }
      setStatus(`generated ${result.samples.length} image(s) of ${result.num_tokens} tokens`);
    } catch (err) {
      setStatus(err.message, true);
    }
  });
}

start().catch((e) => { document.body.dataset.state = "error"; setStatus(e.message, true); });
