// gnnseg web page: upload, draw boxes, show masks. Talks to the service's /v1 API only.
"use strict";

const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
                [240, 50, 230], [210, 245, 60]];
const state = { image: null, slice: 0, picture: null, boxes: [], masks: null, drag: null, scale: 1, busy: false };
const $ = (id) => document.getElementById(id);
const canvas = $("view");
const context = canvas.getContext("2d");

// A service started with a token prints the page's address with #token=...; the fragment never reaches a server.
const TOKEN = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("gnnseg-token");
if (TOKEN) { sessionStorage.setItem("gnnseg-token", TOKEN); history.replaceState(null, "", location.pathname); }

function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (TOKEN) headers.set("Authorization", `Bearer ${TOKEN}`);
  return fetch(path, { ...options, headers });
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch { return `${response.status} ${response.statusText}`; }
}

async function upload(file) {
  const form = new FormData();
  form.append("file", file);
  form.append("modality", $("modality").value);
  setStatus(`Uploading ${file.name}...`);
  const response = await api("/v1/images", { method: "POST", body: form });
  if (!response.ok) { setStatus(`Could not open ${file.name}: ${await errorText(response)}`, true); return; }
  state.image = await response.json();
  state.boxes = (state.image.kind === "2d" && state.image.boxes) ? state.image.boxes.map((b) => ({ box: b, slice: 0 })) : [];
  state.masks = null;
  const volume = state.image.kind === "3d";
  $("slice-controls").hidden = !volume;
  $("slice").max = state.image.slices - 1;
  $("z-to").value = state.image.slices - 1;
  await showSlice(volume ? Math.floor(state.image.slices / 2) : 0);
  setStatus(`${file.name}: ${state.image.shape.join(" x ")}${volume ? " (volume)" : ""}. Drag a box around an object.`);
  if (state.boxes.length) await segment();
}

async function showSlice(index) {
  state.slice = index;
  $("slice").value = index;
  $("slice-number").textContent = index;
  const response = await api(`/v1/images/${state.image.id}/slices/${index}`);
  if (!response.ok) { setStatus(await errorText(response), true); return; }
  state.picture = await createImageBitmap(await response.blob());
  const [height, width] = state.image.shape.slice(-2);
  state.scale = Math.min(1024 / width, 1024 / height, Math.max(1, 512 / Math.max(width, height)));
  canvas.width = Math.round(width * state.scale);
  canvas.height = Math.round(height * state.scale);
  draw();
}

function maskOnSlice(mask) {
  // mask: {size, counts} run lengths over the 2D image or the (D, H, W) volume; returns the current slice's bits
  const [height, width] = state.image.shape.slice(-2);
  const bits = new Uint8Array(height * width);
  const offset = mask.size.length === 3 ? state.slice * height * width : 0;
  let position = 0, value = 0;
  for (const run of mask.counts) {
    if (value) {
      const start = Math.max(position, offset), end = Math.min(position + run, offset + height * width);
      for (let i = start; i < end; i++) bits[i - offset] = 1;
    }
    position += run;
    value = 1 - value;
    if (position >= offset + height * width) break;
  }
  return bits;
}

function draw() {
  if (!state.picture) return;
  context.imageSmoothingEnabled = false;
  context.drawImage(state.picture, 0, 0, canvas.width, canvas.height);
  if (state.masks) {
    const [height, width] = state.image.shape.slice(-2);
    const overlay = new ImageData(width, height);
    state.masks.forEach((mask, k) => {
      const bits = maskOnSlice(mask.rle);
      const [r, g, b] = COLORS[k % COLORS.length];
      for (let i = 0; i < bits.length; i++) {
        if (bits[i]) { overlay.data.set([r, g, b, 110], 4 * i); }
      }
    });
    const layer = new OffscreenCanvas(width, height);
    layer.getContext("2d").putImageData(overlay, 0, 0);
    context.drawImage(layer, 0, 0, canvas.width, canvas.height);
  }
  context.lineWidth = 2;
  state.boxes.forEach((entry, k) => {
    if (entry.slice !== state.slice && !entry.box3d) return;
    const [x0, y0, x1, y1] = entry.box;
    const [r, g, b] = COLORS[k % COLORS.length];
    context.strokeStyle = `rgb(${r}, ${g}, ${b})`;
    context.strokeRect(x0 * state.scale, y0 * state.scale, (x1 - x0) * state.scale, (y1 - y0) * state.scale);
  });
  if (state.drag) {
    const { x0, y0, x1, y1 } = state.drag;
    context.strokeStyle = "#ffffff";
    context.setLineDash([6, 4]);
    context.strokeRect(Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0));
    context.setLineDash([]);
  }
  listBoxes();
}

function listBoxes() {
  $("boxes").innerHTML = "";
  state.boxes.forEach((entry, k) => {
    const item = document.createElement("li");
    const iou = state.masks && state.masks[k] && state.masks[k].iou !== null ? `, predicted IoU ${state.masks[k].iou.toFixed(2)}` : "";
    const where = entry.box3d ? `slices ${entry.box3d[2]}-${entry.box3d[5]}` : `slice ${entry.slice}`;
    item.textContent = `[${entry.box.map(Math.round).join(", ")}] ${state.image.kind === "3d" ? where : ""}${iou}`;
    $("boxes").appendChild(item);
  });
  const any = state.boxes.length > 0;
  $("undo").disabled = $("clear").disabled = !any;
  $("download-png").disabled = !any || state.image.kind === "3d" && state.boxes.some((e) => e.box3d);
  $("download-nifti").disabled = !any || state.image.kind !== "3d";
}

function requestBody(format) {
  if (state.image.kind === "3d" && state.boxes.some((e) => e.box3d)) {
    return { boxes3d: state.boxes.map((e) => e.box3d || [e.box[0], e.box[1], e.slice, e.box[2], e.box[3], e.slice]), format };
  }
  const onSlice = state.boxes.filter((e) => e.slice === state.slice);
  const body = { boxes: onSlice.map((e) => e.box), format };
  if (state.image.kind === "3d") body.slice = state.slice;
  return body;
}

async function segment() {
  const body = requestBody("json");
  if (body.boxes && body.boxes.length === 0 || !state.boxes.length) { state.masks = null; draw(); return; }
  state.busy = true;
  setStatus("Segmenting...");
  const began = performance.now();
  const response = await api(`/v1/images/${state.image.id}/segment`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  state.busy = false;
  if (!response.ok) { setStatus(await errorText(response), true); return; }
  const answer = await response.json();
  state.masks = answer.masks;
  draw();
  canvas.dataset.masks = String(answer.masks.length);
  setStatus(`${answer.masks.length} mask(s) in ${((performance.now() - began) / 1000).toFixed(2)} s.`);
}

function toImage(event) {
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width);
  const y = (event.clientY - rect.top) * (canvas.height / rect.height);
  return { x: Math.max(0, Math.min(canvas.width, x)), y: Math.max(0, Math.min(canvas.height, y)) };
}

canvas.addEventListener("mousedown", (event) => {
  if (!state.image) return;
  const p = toImage(event);
  state.drag = { x0: p.x, y0: p.y, x1: p.x, y1: p.y };
});
canvas.addEventListener("mousemove", (event) => {
  if (!state.drag) return;
  const p = toImage(event);
  state.drag.x1 = p.x; state.drag.y1 = p.y;
  draw();
});
window.addEventListener("mouseup", async () => {
  if (!state.drag) return;
  const { x0, y0, x1, y1 } = state.drag;
  state.drag = null;
  const [height, width] = state.image.shape.slice(-2);
  const box = [Math.min(x0, x1), Math.min(y0, y1), Math.max(x0, x1), Math.max(y0, y1)].map((v) => v / state.scale);
  box[2] = Math.min(box[2], width - 1); box[3] = Math.min(box[3], height - 1);
  if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { draw(); return; }
  const entry = { box, slice: state.slice };
  if (state.image.kind === "3d" && $("propagate").checked) {
    entry.box3d = [box[0], box[1], Number($("z-from").value), box[2], box[3], Number($("z-to").value)];
  }
  state.boxes.push(entry);
  await segment();
});

$("file").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
function volumeResult() {
  return state.masks && state.masks.length && state.masks[0].rle.size.length === 3;
}
// a 3D result covers every slice: scrolling only redraws; 2D boxes belong to their slice and are asked per slice
$("slice").addEventListener("input", (event) => showSlice(Number(event.target.value)).then(() => (volumeResult() ? draw() : segment())));
$("undo").addEventListener("click", () => { state.boxes.pop(); segment(); });
$("clear").addEventListener("click", () => { state.boxes = []; state.masks = null; draw(); });
document.addEventListener("dragover", (event) => { event.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  if (event.dataTransfer.files[0]) upload(event.dataTransfer.files[0]);
});

async function download(format, suffix) {
  const response = await api(`/v1/images/${state.image.id}/segment`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(requestBody(format)),
  });
  if (!response.ok) { setStatus(await errorText(response), true); return; }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `${state.image.name.replace(/\.[^.]*$/, "").replace(/\.nii$/, "")}_mask${suffix}`;
  link.click();
}
$("download-png").addEventListener("click", () => download("png", ".png"));
$("download-nifti").addEventListener("click", () => download("nifti", ".nii.gz"));
