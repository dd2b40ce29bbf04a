// The semstore search page: plain JS, no build step. Every API call sends the key typed in
// the page (kept in sessionStorage) as "Authorization: Bearer"; thumbnails and originals are
// fetched the same way and shown from blob URLs, since <img src> cannot carry the header.
// A server started with SEMSTORE_API_KEYS_DISABLED=1 answers without a key: the page then
// asks for none.
"use strict";

const KEY_STORAGE = "semstore.apiKey";
const COLLECTION_STORAGE = "semstore.collection";
const UPLOAD_BATCH = 8;  // images per request (the server caps a request at max_images_per_request)

const $ = (id) => document.getElementById(id);
const els = {
  keyForm: $("key-form"), key: $("api-key"), forget: $("forget-key"), keyHow: $("key-how"),
  form: $("search-form"), collection: $("collection"), query: $("query"), k: $("k"),
  button: $("search-button"), drop: $("drop-zone"), choose: $("choose-image"), file: $("image-input"),
  status: $("status"), results: $("results"), heading: $("results-heading"),
  uploadForm: $("upload-form"), uploadInput: $("upload-input"), uploadMeta: $("upload-meta"), uploadButton: $("upload-button"),
  detail: $("detail"), detailTitle: $("detail-title"), detailImage: $("detail-image"), detailNote: $("detail-note"),
  detailFacts: $("detail-facts"), detailOpen: $("detail-open"), detailMore: $("detail-more"), detailClose: $("detail-close"),
  takenFrom: $("taken-from"), takenUntil: $("taken-until"), camera: $("camera"), clearFilters: $("clear-filters"),
  duplicatesForm: $("duplicates-form"), duplicatesThreshold: $("duplicates-threshold"), duplicatesButton: $("duplicates-button"),
  groupsSection: $("duplicate-groups-section"), groups: $("duplicate-groups"), groupsHeading: $("duplicates-heading"),
};

let objectUrls = [];
let detailUrl = null;
let detailHit = null;
let searchSerial = 0;

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function setStatus(text, isError = false) {
  els.status.textContent = text;
  els.status.classList.toggle("error", isError);
}

class ApiError extends Error {
  constructor(message, status, code = null, detail = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

async function api(path, options = {}, key = apiKey()) {
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let error = null;
    try {
      const body = await response.json();
      if (body && body.error) {
        error = body.error;
        message = `${error.message} (${error.code})`;
      }
    } catch (_) { /* not JSON */ }
    throw new ApiError(message, response.status, error && error.code, error && error.detail);
  }
  return response;
}

function showCollections(body) {
  const wanted = els.collection.value || sessionStorage.getItem(COLLECTION_STORAGE);
  els.collection.replaceChildren(...body.collections.map((c) => {
    const option = new Option(`${c.name} (${c.items} items)`, c.name);
    option.selected = c.name === wanted;
    return option;
  }));
  return body.collections.length
    ? `${body.collections.length} collection(s).`
    : "No collections yet: ingest some images first (semstore ingest FOLDER -c NAME).";
}

function askForKey(message, isError = false) {
  els.keyForm.hidden = false;
  els.keyHow.hidden = false;
  els.key.placeholder = "ssk_…";
  setStatus(`${message} Paste a key above (how to get one is said there).`, isError);
  els.key.focus();
}

async function loadCollections() {
  const key = apiKey();
  try {
    const body = await (await api("/v1/collections", {}, key)).json();
    if (!key) {  // the server needs no key (SEMSTORE_API_KEYS_DISABLED): do not ask for one
      els.keyForm.hidden = true;
    }
    setStatus(`Ready. ${showCollections(body)}`);
  } catch (error) {
    if (error.status !== 401) {
      setStatus(`Cannot list collections: ${error.message}`, true);
    } else if (key) {  // a stored key that stopped working (revoked, or another server)
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey(`The saved key was refused: ${error.message}.`, true);
    } else {
      askForKey("This server needs an API key.");
    }
  }
}

async function useKey(key) {
  setStatus("Checking the key…");
  try {
    const body = await (await api("/v1/collections", {}, key)).json();
    sessionStorage.setItem(KEY_STORAGE, key);
    els.key.placeholder = "key saved for this tab";
    els.keyHow.hidden = true;
    setStatus(`Key accepted. ${showCollections(body)}`);
  } catch (error) {
    sessionStorage.removeItem(KEY_STORAGE);
    els.collection.replaceChildren();
    render([]);
    if (error.status === 401 || error.status === 403) {
      askForKey(`That key was refused: ${error.message}.`, true);
    } else {
      setStatus(`Cannot check the key: ${error.message}`, true);
    }
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
    const partial = body.partial ? ` Partial answer: shard(s) ${body.missing_shards.join(", ")} did not answer, their items are missing.` : "";
    setStatus(`${body.hits.length} results for ${describe} in ${body.timing.total_ms.toFixed(1)} ms.${partial}`, body.partial);
  } catch (error) {
    if (serial === searchSerial) {
      render([]);  // results of an earlier search under this error would read as its answer
      setStatus(`Search failed: ${error.message}`, true);
    }
  } finally {
    if (serial === searchSerial) els.button.disabled = false;
  }
}

function nextDay(isoDate) {  // "until" is inclusive: photos before the next day's midnight
  const day = new Date(`${isoDate}T00:00:00Z`);
  day.setUTCDate(day.getUTCDate() + 1);
  return day.toISOString().slice(0, 10);
}

function photoFilter() {  // the EXIF filter of the controls, or null (the server checks it)
  const where = {};
  const taken = {};
  if (els.takenFrom.value) taken.$gte = els.takenFrom.value;
  if (els.takenUntil.value) taken.$lt = nextDay(els.takenUntil.value);
  if (Object.keys(taken).length) where["exif.taken_at"] = taken;
  const camera = els.camera.value.trim();
  if (camera) where["exif.model"] = camera;
  return Object.keys(where).length ? where : null;
}

function filterNote(where) {
  if (!where) return "";
  const parts = [];
  if (els.takenFrom.value) parts.push(`from ${els.takenFrom.value}`);
  if (els.takenUntil.value) parts.push(`until ${els.takenUntil.value}`);
  if (where["exif.model"]) parts.push(`camera ${where["exif.model"]}`);
  return ` (photos ${parts.join(", ")})`;
}

function searchJson(payload) {
  const where = photoFilter();
  return () => api(collectionPath("/search"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ ...payload, k: resultCount(), ...(where ? { where } : {}) }),
  });
}

function searchText(text) {
  runSearch(`“${text}”${filterNote(photoFilter())}`, searchJson({ text }));
}

function searchImage(file) {
  const form = new FormData();
  const where = photoFilter();
  form.append("image", file, file.name || "image");
  form.append("k", String(resultCount()));
  if (where) form.append("where", JSON.stringify(where));
  runSearch(`image ${file.name || ""}`.trim() + filterNote(where), () => api(collectionPath("/search/image"), { method: "POST", body: form }));
}

async function moreLikeThis(hit) {
  await runSearch(`items like ${displayName(hit)}${filterNote(photoFilter())}`, searchJson({ item_id: hit.id }));
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

  const open = document.createElement("button");
  open.type = "button";
  open.className = "open-detail";
  open.setAttribute("aria-label", `Details of ${displayName(hit)}`);
  open.addEventListener("click", () => openDetail(hit));

  const figure = document.createElement("figure");
  const img = thumbnailImage(hit, 256, objectUrls);
  figure.append(img);

  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `score ${hit.score.toFixed(3)}`;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = displayName(hit);
  caption.append(score, name);
  const facts = photoFacts(hit.exif || {});
  if (facts) {
    const exif = document.createElement("span");
    exif.className = "exif";
    exif.textContent = facts;
    caption.append(exif);
  }
  figure.append(caption);
  open.append(figure);

  const more = document.createElement("button");
  more.type = "button";
  more.className = "secondary more-like-this";
  more.textContent = "More like this";
  more.setAttribute("aria-label", `More like ${displayName(hit)}`);
  more.addEventListener("click", () => moreLikeThis(hit));

  item.append(open, more);
  return item;
}

function thumbnailImage(hit, size, urls) {  // an <img> whose thumbnail loads in the background
  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = displayName(hit);
  img.width = size;
  img.height = size;
  img.decoding = "async";
  loadThumbnail(hit, img, size, urls);
  return img;
}

async function loadThumbnail(hit, img, size, urls) {
  try {
    const blob = await (await api(collectionPath(`/items/${hit.id}/thumbnail?size=${size}`))).blob();
    const url = URL.createObjectURL(blob);
    urls.push(url);
    img.src = url;
  } catch (_) {
    img.alt = `${displayName(hit)} (no preview)`;
    img.classList.add("missing");
  }
}

function photoFacts(exif) {  // "2023-05-01 14:03 · Fujifilm X100V" from a hit's EXIF facts
  const taken = exif.taken_at ? exif.taken_at.slice(0, 16).replace("T", " ") : "";
  const camera = [exif.make, exif.model].filter(Boolean).join(" ");
  return [taken, camera].filter(Boolean).join(" · ");
}

// -- item details ---------------------------------------------------------------------------

function fact(term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  return [dt, dd];
}

async function openDetail(hit) {
  detailHit = hit;
  if (detailUrl) URL.revokeObjectURL(detailUrl);
  detailUrl = null;
  els.detailTitle.textContent = displayName(hit);
  els.detailImage.removeAttribute("src");
  els.detailImage.alt = displayName(hit);
  els.detailOpen.hidden = true;
  els.detailNote.textContent = "Loading the original…";
  const size = hit.width && hit.height ? `${hit.width} × ${hit.height} px` : "unknown";
  const metadata = Object.entries(hit.metadata || {});
  els.detailFacts.replaceChildren(
    ...fact("source", hit.source_uri),
    ...fact("item id", String(hit.id)),
    ...fact("score", hit.score.toFixed(4)),
    ...fact("size", size),
    ...(metadata.length ? metadata.flatMap(([key, value]) => fact(key, JSON.stringify(value))) : fact("metadata", "none")),
    ...Object.entries(hit.exif || {}).flatMap(([key, value]) => fact(`EXIF ${key}`, String(value))),
  );
  els.detail.showModal();
  try {
    const blob = await (await api(collectionPath(`/items/${hit.id}/original`))).blob();
    if (detailHit !== hit) return;
    detailUrl = URL.createObjectURL(blob);
    els.detailImage.src = detailUrl;
    els.detailOpen.href = detailUrl;
    els.detailOpen.hidden = false;
    els.detailNote.textContent = "";
  } catch (error) {
    if (detailHit === hit) els.detailNote.textContent = `The original is not available: ${error.message}`;
  }
}

function closeDetail() {
  els.detail.close();
}

els.detail.addEventListener("close", () => {
  detailHit = null;
  els.detailImage.removeAttribute("src");
  if (detailUrl) URL.revokeObjectURL(detailUrl);
  detailUrl = null;
});
els.detailClose.addEventListener("click", closeDetail);
els.detailMore.addEventListener("click", () => {
  const hit = detailHit;
  closeDetail();
  if (hit) moreLikeThis(hit);
});

// -- near-duplicates --------------------------------------------------------------------------

let groupUrls = [];

function groupView(group, number) {
  const item = document.createElement("li");
  item.className = "group";
  item.dataset.ids = group.ids.join(",");
  const title = document.createElement("p");
  title.className = "group-title";
  const similarity = group.min_similarity === group.max_similarity
    ? group.min_similarity.toFixed(3) : `${group.min_similarity.toFixed(3)}–${group.max_similarity.toFixed(3)}`;
  title.textContent = `Group ${number}: ${group.ids.length} items, similarity ${similarity}`;
  const row = document.createElement("ul");
  row.className = "group-row";
  group.ids.forEach((id, i) => {
    const hit = { id, source_uri: group.source_uris[i] || `item ${id}`, score: NaN, metadata: {}, exif: {} };
    const cell = document.createElement("li");
    const figure = document.createElement("figure");
    const caption = document.createElement("figcaption");
    caption.textContent = `${displayName(hit)} (#${id})`;
    figure.append(thumbnailImage(hit, 160, groupUrls), caption);
    cell.append(figure);
    row.append(cell);
  });
  item.append(title, row);
  return item;
}

async function findDuplicates() {
  if (!els.collection.value) {
    setStatus("Pick a collection first.", true);
    return;
  }
  const threshold = Number.parseFloat(els.duplicatesThreshold.value);
  if (!(threshold > 0 && threshold <= 1)) {
    setStatus("The similarity must be a number above 0 and at most 1, e.g. 0.9.", true);
    els.duplicatesThreshold.focus();
    return;
  }
  els.duplicatesButton.disabled = true;
  setStatus(`Looking for near-duplicates (similarity ${threshold}) in ${els.collection.value}…`);
  groupUrls.forEach((url) => URL.revokeObjectURL(url));
  groupUrls = [];
  try {
    const body = await (await api(collectionPath(`/duplicates?threshold=${encodeURIComponent(threshold)}`))).json();
    els.groups.replaceChildren(...body.groups.map((group, i) => groupView(group, i + 1)));
    els.groupsSection.hidden = false;
    const shown = body.total > body.groups.length ? ` (the first ${body.groups.length} shown)` : "";
    setStatus(`${body.total} group(s) of near-duplicates at similarity ${body.threshold}${shown}.`);
    els.groupsHeading.focus();
  } catch (error) {
    els.groups.replaceChildren();
    els.groupsSection.hidden = true;
    setStatus(`Duplicate search failed: ${error.message}`, true);
  } finally {
    els.duplicatesButton.disabled = false;
  }
}

els.duplicatesForm.addEventListener("submit", (event) => {
  event.preventDefault();
  findDuplicates();
});

// -- upload -----------------------------------------------------------------------------------

function uploadMetadata() {
  const text = els.uploadMeta.value.trim();
  if (!text) return null;
  let value;
  try {
    value = JSON.parse(text);
  } catch (_) {
    throw new Error('the metadata must be a JSON object, e.g. {"album": "summer"}');
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new Error('the metadata must be a JSON object, e.g. {"album": "summer"}');
  }
  return text;
}

async function upload(files) {
  if (!els.collection.value) {
    setStatus("Pick a collection first.", true);
    return;
  }
  let metadata;
  try {
    metadata = uploadMetadata();
  } catch (error) {
    setStatus(`Upload not sent: ${error.message}.`, true);
    els.uploadMeta.focus();
    return;
  }
  els.uploadButton.disabled = true;
  const totals = { added: 0, skipped: 0 };
  const failed = [];
  try {
    for (let start = 0; start < files.length; start += UPLOAD_BATCH) {
      setStatus(`Uploading ${Math.min(start + UPLOAD_BATCH, files.length)} of ${files.length} image(s)…`);
      const form = new FormData();
      files.slice(start, start + UPLOAD_BATCH).forEach((file) => form.append("files", file, file.name));
      if (metadata) form.append("metadata", metadata);
      let body;
      try {
        body = await (await api(collectionPath("/items"), { method: "POST", body: form })).json();
      } catch (error) {
        if (error.code !== "bad_images" || !error.detail) throw error;
        body = error.detail;  // no image of this batch could be stored: the reasons are in the detail
      }
      totals.added += body.added;
      totals.skipped += body.skipped;
      body.files.filter((f) => f.status === "failed").forEach((f) => failed.push(`${f.source}: ${f.reason}`));
    }
    const parts = [`Uploaded: ${totals.added} added, ${totals.skipped} already stored`];
    if (failed.length) parts.push(`${failed.length} failed (${failed.join("; ")})`);
    setStatus(`${parts.join(", ")}.`, failed.length > 0 && totals.added === 0);
    els.uploadInput.value = "";
    const body = await (await api("/v1/collections")).json();
    showCollections(body);
  } catch (error) {
    const hint = error.status === 403 ? " Uploading needs a read-write key: semstore keys create NAME --scope read-write." : "";
    setStatus(`Upload failed: ${error.message}.${hint}`, true);
  } finally {
    els.uploadButton.disabled = false;
  }
}

els.uploadForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const files = [...(els.uploadInput.files || [])];
  if (!files.length) {
    setStatus("Choose one or more images to upload first.", true);
    els.uploadInput.focus();
    return;
  }
  upload(files);
});

// -- events ---------------------------------------------------------------------------------

els.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const key = els.key.value.trim();
  els.key.value = "";
  if (!key) {
    setStatus("Paste an API key first (how to get one is said above).", true);
    els.key.focus();
    return;
  }
  useKey(key);
});

els.forget.addEventListener("click", () => {
  sessionStorage.removeItem(KEY_STORAGE);
  els.collection.replaceChildren();
  render([]);
  askForKey("Key forgotten.");
});

els.collection.addEventListener("change", () => {
  sessionStorage.setItem(COLLECTION_STORAGE, els.collection.value);
  els.groups.replaceChildren();  // groups of another collection would read as this one's
  els.groupsSection.hidden = true;
});
els.clearFilters.addEventListener("click", () => {
  els.takenFrom.value = "";
  els.takenUntil.value = "";
  els.camera.value = "";
  setStatus("Filters cleared: the next search covers every item.");
});

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
