// The semstore search page: plain JS, no build step. Every API call sends the key typed in
// the page (kept in sessionStorage) as "Authorization: Bearer"; thumbnails are fetched the
// same way and shown from blob URLs, since <img src> cannot carry the header.
"use strict";

const KEY_STORAGE = "semstore.apiKey";
const COLLECTION_STORAGE = "semstore.collection";

const $ = (id) => document.getElementById(id);
const els = {
  keyForm: $("key-form"), key: $("api-key"), forget: $("forget-key"),
  form: $("search-form"), collection: $("collection"), query: $("query"), k: $("k"),
  button: $("search-button"), drop: $("drop-zone"), choose: $("choose-image"), file: $("image-input"),
  status: $("status"), results: $("results"), heading: $("results-heading"),
};

let objectUrls = [];
let searchSerial = 0;

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function setStatus(text, isError = false) {
  els.status.textContent = text;
  els.status.classList.toggle("error", isError);
}

class ApiError extends Error {}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  const key = apiKey();
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = `${body.error.message} (${body.error.code})`;
    } catch (_) { /* not JSON */ }
    throw new ApiError(message);
  }
  return response;
}

async function loadCollections() {
  if (!apiKey()) {
    setStatus("Enter an API key to start.");
    els.key.focus();
    return;
  }
  try {
    const body = await (await api("/v1/collections")).json();
    const wanted = sessionStorage.getItem(COLLECTION_STORAGE);
    els.collection.replaceChildren(...body.collections.map((c) => {
      const option = new Option(`${c.name} (${c.items} items)`, c.name);
      option.selected = c.name === wanted;
      return option;
    }));
    setStatus(body.collections.length ? "Ready." : "No collections yet: ingest some images first.");
  } catch (error) {
    setStatus(`Cannot list collections: ${error.message}`, true);
  }
}

function collectionPath(suffix) {
  return `/v1/collections/${encodeURIComponent(els.collection.value)}${suffix}`;
}

function resultCount() {
  const k = Number.parseInt(els.k.value, 10);
  return Number.isFinite(k) && k > 0 ? Math.min(k, 100) : 24;
}

async function runSearch(describe, request) {
  if (!els.collection.value) {
    setStatus("Pick a collection first.", true);
    return;
  }
  const serial = ++searchSerial;
  els.button.disabled = true;
  setStatus(`Searching ${describe}…`);
  try {
    const body = await (await request()).json();
    if (serial !== searchSerial) return;  // a newer search finished first
    render(body.hits);
    setStatus(`${body.hits.length} results for ${describe} in ${body.timing.total_ms.toFixed(1)} ms.`);
  } catch (error) {
    if (serial === searchSerial) setStatus(`Search failed: ${error.message}`, true);
  } finally {
    if (serial === searchSerial) els.button.disabled = false;
  }
}

function searchJson(payload) {
  return () => api(collectionPath("/search"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...payload, k: resultCount() }),
  });
}

function searchText(text) {
  runSearch(`“${text}”`, searchJson({ text }));
}

function searchImage(file) {
  const form = new FormData();
  form.append("image", file, file.name || "image");
  form.append("k", String(resultCount()));
  runSearch(`image ${file.name || ""}`.trim(), () => api(collectionPath("/search/image"), { method: "POST", body: form }));
}

async function moreLikeThis(hit) {
  await runSearch(`items like ${displayName(hit)}`, searchJson({ item_id: hit.id }));
  els.heading.focus();
}

function displayName(hit) {
  const uri = hit.source_uri || "";
  return uri.split(/[\\/]/).pop() || `item ${hit.id}`;
}

function render(hits) {
  objectUrls.forEach((url) => URL.revokeObjectURL(url));
  objectUrls = [];
  els.results.replaceChildren(...hits.map(card));
}

function card(hit) {
  const item = document.createElement("li");
  item.className = "card";
  item.dataset.id = String(hit.id);

  const figure = document.createElement("figure");
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = displayName(hit);
  img.width = 256;
  img.height = 256;
  img.decoding = "async";
  figure.append(img);

  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `score ${hit.score.toFixed(3)}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = displayName(hit);
  caption.append(score, name);
  figure.append(caption);

  const more = document.createElement("button");
  more.type = "button";
  more.className = "secondary more-like-this";
  more.textContent = "More like this";
  more.setAttribute("aria-label", `More like ${displayName(hit)}`);
  more.addEventListener("click", () => moreLikeThis(hit));

  item.append(figure, more);
  loadThumbnail(hit, img);
  return item;
}

async function loadThumbnail(hit, img) {
  try {
    const blob = await (await api(collectionPath(`/items/${hit.id}/thumbnail?size=256`))).blob();
    const url = URL.createObjectURL(blob);
    objectUrls.push(url);
    img.src = url;
  } catch (_) {
    img.alt = `${displayName(hit)} (no preview)`;
    img.classList.add("missing");
  }
}

// -- events ---------------------------------------------------------------------------------

els.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = els.key.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  els.key.value = "";
  els.key.placeholder = key ? "key saved for this tab" : "ssk_…";
  loadCollections();
});

els.forget.addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  els.collection.replaceChildren();
  render([]);
  els.key.placeholder = "ssk_…";
  setStatus("Key forgotten.");
  els.key.focus();
});

els.collection.addEventListener("change", () => sessionStorage.setItem(COLLECTION_STORAGE, els.collection.value));

els.form.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = els.query.value.trim();
  if (!text) {
    setStatus("Type a description, or search by image below.", true);
    els.query.focus();
    return;
  }
  searchText(text);
});

els.choose.addEventListener("click", () => els.file.click());
els.file.addEventListener("change", () => {
  if (els.file.files && els.file.files[0]) searchImage(els.file.files[0]);
  els.file.value = "";
});

["dragenter", "dragover"].forEach((type) => els.drop.addEventListener(type, (event) => {
  event.preventDefault();
  els.drop.classList.add("dragging");
}));
["dragleave", "drop"].forEach((type) => els.drop.addEventListener(type, () => els.drop.classList.remove("dragging")));
els.drop.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) searchImage(file);
});
document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData ? event.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
  if (file) searchImage(file);
});

if (apiKey()) els.key.placeholder = "key saved for this tab";
loadCollections();
