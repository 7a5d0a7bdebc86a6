// facegnet's page: plain JavaScript over the HTTP API (no framework, nothing loaded from elsewhere).
// The token comes from the link the server prints (#token=...) or the sign-in form and is kept in
// sessionStorage: it lasts as long as the tab and is sent as "Authorization: Bearer <token>".
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
};

// ------------------------------------------------------------------------------------------------ the API
class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

const api = {
  get token() { return sessionStorage.getItem("facegnet-token"); },
  set token(value) {
    if (value) sessionStorage.setItem("facegnet-token", value); else sessionStorage.removeItem("facegnet-token");
  },
  async request(method, path, { body, json } = {}) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
    const response = await fetch(path, { method, headers, body });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      if (response.status === 401) showLogin(message);
      throw new ApiError(response.status, message);
    }
    const type = response.headers.get("content-type") || "";
    return type.includes("application/json") ? response.json() : response.blob();
  },
  get(path) { return this.request("GET", path); },
  post(path, options) { return this.request("POST", path, options); },
  patch(path, json) { return this.request("PATCH", path, { json }); },
  delete(path) { return this.request("DELETE", path); },
};

const form = (field, files) => {
  const data = new FormData();
  for (const file of files) data.append(field, file, file.name);
  return data;
};
const person = (name) => `/api/people/${encodeURIComponent(name)}`;

// Images behind the token cannot be <img src=...>: fetch them with the header, show them as blob URLs.
async function authImage(path, alt) {
  const img = el("img", { alt, class: "thumb" });
  api.get(path).then((blob) => { img.src = URL.createObjectURL(blob); }).catch(() => img.classList.add("missing"));
  return img;
}

// ------------------------------------------------------------------------------------------------ messages
let messageTimer = null;
function say(text, kind = "info") {
  const box = $("#message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  clearTimeout(messageTimer);
  // An error or a warning stays until the next message: a warning is a sentence or two to read.
  if (kind !== "error" && kind !== "warning") messageTimer = setTimeout(() => { box.hidden = true; }, 6000);
}
const fail = (error) => say(error.message || String(error), "error");
// " file: why." for each photo an enrolment report added with a warning (cut tight), or "".
const warnings = (report) => report.added.filter((a) => a.warning).map((a) => ` ${a.file}: ${a.warning}.`).join("");

// ------------------------------------------------------------------------------------------------ sign-in
let signedIn = 0; // counts sign-outs: an answer that arrives after one is not shown

function showLogin(reason) {
  signedIn += 1;
  stopCamera();
  $("#login").hidden = false;
  $("#tabs").hidden = true;
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = true;
  if (reason && api.token) say(reason, "error");
  api.token = null;
  clearGallery();
}

// Signed out (or refused), the page shows nothing of the gallery: no counts, names, faces or groups.
function clearGallery() {
  $("#summary").textContent = "";
  for (const selector of ["#people-grid", "#identify-result", "#identify-list", "#cluster-groups"]) {
    $(selector).replaceChildren();
  }
  $("#cluster-status").textContent = "";
  $("#camera-status").textContent = "";
  job = null;
}

async function start() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    api.token = decodeURIComponent(match[1]);
    history.replaceState(null, "", location.pathname);  // the token does not stay in the address bar
  }
  const health = await (await fetch("/health")).json();
  if (health.auth && !api.token) { showLogin(); return; }
  try {
    await refreshPeople();
  } catch (error) {
    if (error.status !== 401) fail(error);
    return;
  }
  $("#login").hidden = true;
  $("#message").hidden = true;
  $("#tabs").hidden = false;
  showTab(sessionStorage.getItem("facegnet-tab") || "people");
}

$("#login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  api.token = $("#token").value.trim();
  $("#message").hidden = true;
  start();
});
$("#logout").addEventListener("click", () => showLogin());

function showTab(name) {
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== name;
  for (const button of document.querySelectorAll("#tabs [data-tab]")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  sessionStorage.setItem("facegnet-tab", name);
  if (name !== "camera") stopCamera();
  if (name === "clusters") loadLatestJob();
}
for (const button of document.querySelectorAll("#tabs [data-tab]")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}

// ------------------------------------------------------------------------------------------------ drop zones
function dropZone(zone, onFiles) {
  const input = $("input[type=file]", zone);
  const chosen = $(".chosen", zone);
  const show = () => {
    const files = [...input.files];
    chosen.textContent = files.length ? `${files.length} photo(s): ${files.map((f) => f.name).join(", ")}` : "";
    if (onFiles && files.length) onFiles(files);
  };
  input.addEventListener("change", show);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    input.files = event.dataTransfer.files;
    show();
  });
  return input;
}

// ------------------------------------------------------------------------------------------------ people
async function refreshPeople() {
  const since = signedIn;
  const [{ people }, info] = await Promise.all([api.get("/api/people"), api.get("/api/info")]);
  const cards = [];
  for (const entry of people) cards.push(await personCard(entry));
  if (since !== signedIn) return; // signed out meanwhile
  $("#summary").textContent = `${info.people} people, ${info.templates} photos · model ${info.current_model}`;
  const grid = $("#people-grid");
  grid.replaceChildren(...cards);
  if (!people.length) grid.append(el("p", { class: "muted" }, "Nobody is enrolled yet: add a person above."));
}

async function personCard({ name, templates }) {
  const { templates: list } = await api.get(person(name));
  const faces = el("div", { class: "faces" });
  for (const template of list.slice(0, 12)) {
    const img = await authImage(`${person(name)}/templates/${template.id}/thumbnail`, name);
    const remove = el("button", {
      class: "remove", title: "remove this photo", "aria-label": `remove photo ${template.id} of ${name}`,
      onclick: async () => {
        if (!confirm(`Remove this photo of ${name}?`)) return;
        try { await api.delete(`${person(name)}/templates/${template.id}`); await refreshPeople(); } catch (e) { fail(e); }
      },
    }, "×");
    faces.append(el("figure", {}, img, remove));
  }
  const actions = el("div", { class: "actions" },
    el("button", { class: "quiet", onclick: () => renamePerson(name) }, "Rename"),
    el("button", { class: "quiet", onclick: () => mergePerson(name) }, "Merge into…"),
    el("button", { class: "quiet danger", onclick: () => removePerson(name) }, "Delete"));
  return el("article", { class: "card person", dataset: { name } },
    el("h3", {}, name, el("span", { class: "count" }, ` ${templates} photo${templates === 1 ? "" : "s"}`)),
    faces, actions);
}

async function renamePerson(name) {
  const newName = prompt(`New name for ${name}:`, name);
  if (!newName || newName === name) return;
  try { await api.patch(person(name), { name: newName }); await refreshPeople(); } catch (e) { fail(e); }
}
async function mergePerson(name) {
  const into = prompt(`Merge ${name}'s photos into which person?`);
  if (!into) return;
  try { await api.post(`${person(name)}/merge`, { json: { into } }); await refreshPeople(); } catch (e) { fail(e); }
}
async function removePerson(name) {
  if (!confirm(`Delete ${name} and every photo of them from the gallery?`)) return;
  try { await api.delete(person(name)); await refreshPeople(); } catch (e) { fail(e); }
}

const enrollInput = dropZone($("#enroll-drop"));
$("#enroll-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("#enroll-name").value.trim();
  const files = [...enrollInput.files];
  if (!name || !files.length) { say("Give a name and at least one photo.", "error"); return; }
  const button = $("button[type=submit]", event.target);
  button.disabled = true;
  say(`Enrolling ${files.length} photo(s) of ${name}…`);
  try {
    const report = await api.post(`${person(name)}/photos`, { body: form("file", files) });
    const already = report.existing.length ? `; ${report.existing.length} already in the gallery` : "";
    const warned = warnings(report);
    say(`Enrolled ${report.added.length} photo(s) of ${report.name}${already}.${warned}`, warned ? "warning" : "ok");
    event.target.reset();
    $(".chosen", $("#enroll-drop")).textContent = "";
    await refreshPeople();
  } catch (error) { fail(error); } finally { button.disabled = false; }
});

// ------------------------------------------------------------------------------------------------ identify
function drawFaces(stage, faces, width, height) {
  for (const old of stage.querySelectorAll(".box")) old.remove();
  for (const face of faces) {
    // Drawn within the photo: the box of a face cut tight runs past its edges (it widened a phone's page).
    const [x1, y1, x2, y2] = face.box.map((v, i) => Math.min(Math.max(v, 0), i % 2 ? height : width));
    const known = face.name && face.name !== "unknown";
    const label = face.name ? `${face.name} ${face.similarity.toFixed(2)}` : "…";
    const box = el("div", { class: `box ${known ? "known" : "unknown"}`, dataset: { name: face.name || "" } },
      el("span", { class: "label" }, label));
    box.style.left = `${(100 * x1) / width}%`;
    box.style.top = `${(100 * y1) / height}%`;
    box.style.width = `${(100 * (x2 - x1)) / width}%`;
    box.style.height = `${(100 * (y2 - y1)) / height}%`;
    stage.append(box);
  }
}

const identifyInput = dropZone($("#identify-drop"), async ([file]) => {
  const stage = $("#identify-result");
  const list = $("#identify-list");
  const since = signedIn;
  const img = el("img", { alt: file.name, src: URL.createObjectURL(file) });
  img.addEventListener("error", () => img.remove()); // a file this browser cannot show: no broken image
  stage.replaceChildren(img);
  list.replaceChildren();
  say(`Identifying ${file.name}…`);
  try {
    const result = await api.post("/api/identify", { body: form("file", [file]) });
    if (since !== signedIn) return;
    drawFaces(stage, result.faces, result.width, result.height);
    for (const face of result.faces) {
      list.append(el("li", { dataset: { name: face.name } },
        `${face.name} (similarity ${face.similarity.toFixed(3)})`));
    }
    // e.g. "face 1 is cut tight (…)", shown as a sentence of its own
    const warned = (result.warnings || []).map((w) => ` ${w[0].toUpperCase()}${w.slice(1)}.`).join("");
    say(`${result.faces.length} face(s) in ${result.image}.${warned}`, warned ? "warning" : "ok");
  } catch (error) {
    stage.replaceChildren(); // the server refused the photo: show none
    fail(error);
  } finally { identifyInput.value = ""; }
});

// ------------------------------------------------------------------------------------------------ camera
const camera = { stream: null, session: null, running: false, frames: 0, since: 0 };

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("This browser gives no camera here (a camera needs https or http://localhost).", "error");
    return;
  }
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) { fail(new Error(`cannot open the camera: ${error.message}`)); return; }
  const video = $("#camera-video");
  video.srcObject = camera.stream;
  await video.play();
  camera.session = crypto.randomUUID().replaceAll("-", "");
  camera.running = true;
  camera.frames = 0;
  camera.since = performance.now();
  $("#camera-start").disabled = true;
  $("#camera-stop").disabled = false;
  sendFrames(video);
}

async function sendFrames(video) {
  const canvas = document.createElement("canvas");
  const stage = $("#camera-stage");
  while (camera.running) {
    if (!video.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
    if (!camera.running) break; // stopped while the frame was encoded: its session is gone, send nothing
    try {
      // The next frame leaves when this answer is back: a slow server lowers the frame rate, never queues.
      const result = await api.post(`/api/live/${camera.session}/frames`, { body: form("file", [blob]) });
      if (!camera.running) break;
      drawFaces(stage, result.faces, canvas.width, canvas.height);
      camera.frames += 1;
      const fps = (1000 * camera.frames) / (performance.now() - camera.since);
      const names = result.faces.map((f) => f.name || "…").join(", ") || "no face";
      $("#camera-status").textContent = `${fps.toFixed(1)} frames/s · ${names}`;
    } catch (error) {
      if (!camera.running) break; // an answer to a frame of a camera already stopped: not an error to show
      fail(error);
      stopCamera();
    }
  }
}

function stopCamera() {
  if (!camera.running && !camera.stream) return;
  camera.running = false;
  if (camera.stream) camera.stream.getTracks().forEach((track) => track.stop());
  camera.stream = null;
  if (camera.session) api.delete(`/api/live/${camera.session}`).catch(() => {});
  camera.session = null;
  $("#camera-start").disabled = false;
  $("#camera-stop").disabled = true;
  for (const old of document.querySelectorAll("#camera-stage .box")) old.remove();
}
$("#camera-start").addEventListener("click", startCamera);
$("#camera-stop").addEventListener("click", stopCamera);

// ------------------------------------------------------------------------------------------------ clusters
let job = null;
const clusterInput = dropZone($("#cluster-drop"));

$("#cluster-start").addEventListener("click", async () => {
  const files = [...clusterInput.files];
  if (!files.length) { say("Choose the photos to group first.", "error"); return; }
  $("#cluster-status").textContent = `finding faces in ${files.length} photo(s)…`;
  $("#cluster-start").disabled = true;
  try {
    job = await api.post("/api/clusters", { body: form("file", files) });
    clusterInput.value = "";
    $(".chosen", $("#cluster-drop")).textContent = "";
    await renderJob();
  } catch (error) { fail(error); $("#cluster-status").textContent = ""; } finally {
    $("#cluster-start").disabled = false;
  }
});

async function loadLatestJob() {
  if (job) return;
  const since = signedIn;
  try {
    const { jobs } = await api.get("/api/clusters");
    if (!jobs.length) return;
    const latest = await api.get(`/api/clusters/${jobs[0].id}`);
    if (since !== signedIn) return;
    job = latest;
    await renderJob();
  } catch (error) { if (error.status !== 401) fail(error); }
}

async function renderJob() {
  const grid = $("#cluster-groups");
  grid.replaceChildren();
  const open = job.groups.filter((g) => g.state === "open");
  const named = job.groups.filter((g) => g.state === "named");
  const skipped = job.errors.length ? `; ${job.errors.length} photo(s) without a usable face` : "";
  $("#cluster-status").textContent =
    `${job.faces.length} faces, ${open.length} group(s) to name, ${named.length} named${skipped}`;
  for (const group of [...open, ...named]) grid.append(await groupCard(group));
  $("#cluster-merge").disabled = true;
}

async function groupCard(group) {
  const faces = el("div", { class: "faces" });
  for (const face of group.faces.slice(0, 24)) {
    const record = job.faces[face];
    // A face cut tight is marked, with why, where the user decides whether to name it.
    const marks = record.warning ? { class: "tight", title: `${record.name}: ${record.warning}` } : {};
    faces.append(el("figure", marks, await authImage(`/api/clusters/${job.id}/faces/${face}/thumbnail`,
      record.name)));
  }
  const title = group.state === "named" ? `${group.name} (enrolled)` : `Group ${group.id + 1}`;
  const card = el("article", { class: `card group ${group.state}`, dataset: { group: group.id } },
    el("h3", {}, title, el("span", { class: "count" }, ` ${group.faces.length} face(s)`)), faces);
  if (group.state !== "open") return card;
  const select = el("input", { type: "checkbox", class: "pick", "aria-label": `select group ${group.id + 1}`,
    onchange: () => {
      $("#cluster-merge").disabled = document.querySelectorAll("#cluster-groups .pick:checked").length < 2;
    } });
  // A group most of whose faces the gallery names already comes with that name filled in (the user may change it).
  const nameInput = el("input", { placeholder: "Who is this?", value: group.known || "",
    "aria-label": `name of group ${group.id + 1}` });
  const nameForm = el("form", { class: "actions", onsubmit: async (event) => {
    event.preventDefault();
    const name = nameInput.value.trim();
    if (!name) return;
    try {
      const report = await api.post(`/api/clusters/${job.id}/groups/${group.id}/name`, { json: { name } });
      const skipped = report.skipped.length ? ` (${report.skipped.length} face(s) not good enough)` : "";
      const warned = warnings(report);
      say(`Enrolled ${report.added.length} face(s) as ${report.name}${skipped}.${warned}`, warned ? "warning" : "ok");
      job = await api.get(`/api/clusters/${job.id}`);
      await renderJob();
      refreshPeople();
    } catch (error) { fail(error); }
  } },
  select, nameInput, el("button", { type: "submit" }, "Name"),
  el("button", { type: "button", class: "quiet", onclick: async () => {
    try {
      await api.post(`/api/clusters/${job.id}/groups/${group.id}/dismiss`);
      job = await api.get(`/api/clusters/${job.id}`);
      await renderJob();
    } catch (error) { fail(error); }
  } }, "Dismiss"));
  card.append(nameForm);
  return card;
}

$("#cluster-merge").addEventListener("click", async () => {
  const groups = [...document.querySelectorAll("#cluster-groups .pick:checked")]
    .map((box) => Number(box.closest(".group").dataset.group));
  try {
    await api.post(`/api/clusters/${job.id}/merge`, { json: { groups } });
    job = await api.get(`/api/clusters/${job.id}`);
    await renderJob();
  } catch (error) { fail(error); }
});

window.addEventListener("hashchange", () => { if (location.hash.includes("token=")) start(); });
start();
