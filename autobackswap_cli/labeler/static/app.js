"use strict";
// autobackswap label: paint a P x P grid of patches over each image, foreground or background.
// Each stroke is saved to the local server when the mouse is let go; the server merges it onto
// what is on disk (see labeler/store.py), so a crash loses at most the stroke in progress.

const FG = 255, BG = 0, UNLABELLED = 128;
const BRUSHES = [1, 3, 5, 7];

const $ = (id) => document.getElementById(id);
const canvas = $("overlay");
const state = {
  session: null,    // {grid, assisted, images: [{rel, cls, state}], resume, progress}
  index: -1,
  rel: null,
  grid: null,       // Uint8Array(P * P): what the page shows
  base: null,       // Uint8Array(P * P): the grid as the server last confirmed it
  source: "",       // saved | model | empty
  brush: 0,         // index into BRUSHES
  leftPaints: FG,   // X swaps it
  stroke: null,     // {value, changes: Map(cell -> value before), last: [row, col]}
  undo: new Map(),  // rel -> strokes, each [[cell, before, after], ...]
  hover: null,      // [row, col] under the pointer
  dirty: false,     // the shown grid has changes the server has not confirmed
  saving: null,     // the save in flight
  busy: false,      // moving to another image
};

const P = () => state.session.grid;
const apiUrl = (kind, rel) => `/api/${kind}/` + rel.split("/").map(encodeURIComponent).join("/");
const toRows = (flat) => Array.from({length: P()}, (_, r) => Array.from(flat.subarray(r * P(), (r + 1) * P())));
const fromRows = (rows) => Uint8Array.from(rows.flat());

async function api(method, url, body) {
  const init = {method, headers: {}};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(url, init);
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

function showStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

// ------------------------------------------------------------------ saving

async function save(rel, sent) {
  const res = await api("PUT", apiUrl("grid", rel), {grid: toRows(sent), base: toRows(state.base)});
  const merged = fromRows(res.grid);
  if (rel === state.rel) {
    // Cells painted while the request was out stay as painted; the others take the server's value.
    for (let i = 0; i < merged.length; i++) if (state.grid[i] === sent[i]) state.grid[i] = merged[i];
    state.base = merged;
    state.source = "saved";
  }
  imageEntry(rel).state = res.state;
  showProgress(res.progress);
}

// Send the unsaved changes; resolves to false (and retries later) when the server could not save them.
async function flush() {
  while (state.saving) await state.saving;
  if (!state.dirty) return true;
  state.dirty = false;
  state.saving = save(state.rel, state.grid.slice()).then(() => true, (err) => {
    state.dirty = true;
    showStatus(`NOT SAVED: ${err.message} (retrying)`, true);
    setTimeout(flush, 2000);
    return false;
  });
  const ok = await state.saving;
  state.saving = null;
  if (ok) showStatus("saved");
  render();
  return ok;
}

// ------------------------------------------------------------------ painting

function cellAt(ev) {
  const box = canvas.getBoundingClientRect();
  const clamp = (v) => Math.max(0, Math.min(P() - 1, v));
  return [clamp(Math.floor(((ev.clientY - box.top) / box.height) * P())), clamp(Math.floor(((ev.clientX - box.left) / box.width) * P()))];
}

function stamp([row, col]) {
  const half = (BRUSHES[state.brush] - 1) / 2, p = P(), {value, changes} = state.stroke;
  for (let r = Math.max(0, row - half); r <= Math.min(p - 1, row + half); r++) {
    for (let c = Math.max(0, col - half); c <= Math.min(p - 1, col + half); c++) {
      const i = r * p + c;
      if (state.grid[i] === value) continue;
      if (!changes.has(i)) changes.set(i, state.grid[i]);
      state.grid[i] = value;
    }
  }
}

// Paint every cell on the line from the last cell to this one, so fast drags leave no gaps.
function paintTo(cell) {
  const [r0, c0] = state.stroke.last || cell;
  const steps = Math.max(Math.abs(cell[0] - r0), Math.abs(cell[1] - c0));
  for (let s = 0; s <= steps; s++) {
    const t = steps ? s / steps : 0;
    stamp([Math.round(r0 + (cell[0] - r0) * t), Math.round(c0 + (cell[1] - c0) * t)]);
  }
  state.stroke.last = cell;
  render();
}

// A stroke (or a fill, or an undo) is one change: remembered for undo and saved at once.
function commit(changes) {
  if (!changes.length) return;
  if (!state.undo.has(state.rel)) state.undo.set(state.rel, []);
  state.undo.get(state.rel).push(changes);
  state.dirty = true;
  flush();
}

function endStroke() {
  if (!state.stroke) return;
  const changes = [...state.stroke.changes].map(([i, before]) => [i, before, state.grid[i]]);
  state.stroke = null;
  commit(changes);
}

function fillRest() {
  const changes = [];
  state.grid.forEach((v, i) => { if (v === UNLABELLED) changes.push([i, UNLABELLED, BG]); });
  for (const [i, , after] of changes) state.grid[i] = after;
  commit(changes);
  render();
}

function undo() {
  const strokes = state.undo.get(state.rel);
  if (!strokes || !strokes.length) return showStatus("nothing to undo");
  for (const [i, before] of strokes.pop()) state.grid[i] = before;
  state.dirty = true;
  flush();
  render();
}

function setBrush(index) {
  state.brush = Math.max(0, Math.min(BRUSHES.length - 1, index));
  render();
}

// ------------------------------------------------------------------ drawing

function layout() {
  const img = $("image");
  if (!img.naturalWidth) return;
  const availW = window.innerWidth - $("stage").getBoundingClientRect().left - 300;
  const availH = window.innerHeight - $("stage").getBoundingClientRect().top - 16;
  const scale = Math.max(0.05, Math.min(availW / img.naturalWidth, availH / img.naturalHeight));
  const w = Math.round(img.naturalWidth * scale), h = Math.round(img.naturalHeight * scale);
  img.style.width = canvas.style.width = w + "px";
  img.style.height = canvas.style.height = h + "px";
  canvas.width = Math.round(w * devicePixelRatio);
  canvas.height = Math.round(h * devicePixelRatio);
  render();
}

function render() {
  if (!state.grid || !canvas.width) return;
  const ctx = canvas.getContext("2d"), p = P(), cw = canvas.width / p, ch = canvas.height / p;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (let r = 0; r < p; r++) {
    for (let c = 0; c < p; c++) {
      const v = state.grid[r * p + c];
      if (v === UNLABELLED) continue;
      ctx.fillStyle = v === FG ? "rgba(46, 224, 138, 0.35)" : "rgba(14, 16, 40, 0.68)";
      ctx.fillRect(c * cw, r * ch, cw, ch);
    }
  }
  ctx.strokeStyle = "rgba(255, 255, 255, 0.22)";
  ctx.lineWidth = 1;
  ctx.beginPath();
  for (let k = 1; k < p; k++) {
    ctx.moveTo(Math.round(k * cw) + 0.5, 0); ctx.lineTo(Math.round(k * cw) + 0.5, canvas.height);
    ctx.moveTo(0, Math.round(k * ch) + 0.5); ctx.lineTo(canvas.width, Math.round(k * ch) + 0.5);
  }
  ctx.stroke();
  if (state.hover) {
    const half = (BRUSHES[state.brush] - 1) / 2, [r, c] = state.hover;
    ctx.strokeStyle = "#ffd166";
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.strokeRect((c - half) * cw, (r - half) * ch, BRUSHES[state.brush] * cw, BRUSHES[state.brush] * ch);
  }
  const entry = imageEntry(state.rel);
  $("tool").textContent = `brush ${BRUSHES[state.brush]}×${BRUSHES[state.brush]} · left drag paints ${state.leftPaints === FG ? "foreground" : "background"}`;
  $("position").innerHTML = `image ${state.index + 1} of ${state.session.images.length} · <span class="state-${entry.state}">${entry.state}</span>`;
  $("source").textContent = {model: "pre-filled by the segmenter: correct it, then Enter", saved: "", empty: ""}[state.source];
  $("source").className = state.source;
}

function showProgress(progress) {
  state.session.progress = progress;
  $("progress").textContent = `${progress.done}/${progress.total} labelled`;
  $("classes").textContent = Object.entries(progress.classes).map(([cls, [done, total]]) => `${cls} ${done}/${total}`).join(" · ");
  document.title = `${progress.done}/${progress.total} · autobackswap label`;
  const banner = $("banner");
  banner.hidden = progress.done < progress.total;
  banner.textContent = `All ${progress.total} images are labelled. Stop the server with Ctrl-C; the labels are in LABELS.`;
}

const imageEntry = (rel) => state.session.images.find((im) => im.rel === rel);

// ------------------------------------------------------------------ moving between images

async function show(index) {
  if (state.busy) return;
  state.busy = true;
  try {
    if (!(await flush())) return;
    const images = state.session.images;
    index = Math.max(0, Math.min(images.length - 1, index));
    const rel = images[index].rel;
    const res = await api("GET", apiUrl("grid", rel));
    Object.assign(state, {index, rel, grid: fromRows(res.grid), source: res.source, stroke: null});
    state.base = state.grid.slice();
    imageEntry(rel).state = res.state;
    delete document.body.dataset.rel;
    const img = $("image");
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error(`cannot load ${rel}`));
      img.src = apiUrl("image", rel);
    });
    $("name").textContent = rel;
    layout();
    document.body.dataset.rel = rel;  // the page is ready for this image
    if (images[index + 1]) new Image().src = apiUrl("image", images[index + 1].rel);
  } catch (err) {
    showStatus(err.message, true);
  } finally {
    state.busy = false;
  }
}

// Next accepts the image as shown: a model pre-fill nobody corrected is saved too.
async function next() {
  if (state.source === "model") state.dirty = true;
  const images = state.session.images;
  if (state.index + 1 < images.length) return show(state.index + 1);
  if (!(await flush())) return;
  const open = images.findIndex((im) => im.state === "todo" || im.state === "partial");
  if (open >= 0) show(open);
}

async function skip() {
  if (state.busy || !(await flush())) return;
  const session = await api("POST", apiUrl("skip", state.rel), {});
  state.session = session;
  showProgress(session.progress);
  show(state.index + 1);
}

// ------------------------------------------------------------------ input

canvas.addEventListener("pointerdown", (ev) => {
  if (!state.grid || state.busy || (ev.button !== 0 && ev.button !== 2)) return;
  ev.preventDefault();
  canvas.setPointerCapture(ev.pointerId);
  state.stroke = {value: ev.button === 2 ? BG : state.leftPaints, changes: new Map(), last: null};
  paintTo(cellAt(ev));
});
canvas.addEventListener("pointermove", (ev) => {
  if (!state.grid) return;
  state.hover = cellAt(ev);
  if (state.stroke) paintTo(state.hover); else render();
});
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);
canvas.addEventListener("pointerleave", () => { state.hover = null; render(); });
canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
window.addEventListener("resize", layout);

window.addEventListener("keydown", (ev) => {
  const key = ev.key.toLowerCase();
  if ((ev.ctrlKey || ev.metaKey) && key === "z") {
    ev.preventDefault();
    return undo();
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || !state.grid) return;
  const actions = {
    "1": () => setBrush(0), "2": () => setBrush(1), "3": () => setBrush(2), "4": () => setBrush(3),
    "[": () => setBrush(state.brush - 1), "]": () => setBrush(state.brush + 1),
    x: () => { state.leftPaints = state.leftPaints === FG ? BG : FG; render(); },
    f: fillRest, z: undo,
    enter: next, arrowright: next, n: next,
    arrowleft: () => show(state.index - 1), p: () => show(state.index - 1),
    s: skip,
  };
  if (!actions[key]) return;
  ev.preventDefault();
  if (state.stroke) endStroke();
  actions[key]();
});

(async function start() {
  try {
    state.session = await api("GET", "/api/session");
  } catch (err) {
    return showStatus(`cannot reach the server: ${err.message}`, true);
  }
  if (!state.session.images.length) return showStatus("no images to label", true);
  showProgress(state.session.progress);
  show(state.session.resume);
})();
