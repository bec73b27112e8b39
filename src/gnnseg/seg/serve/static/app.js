// gnnseg web page: upload, draw boxes, correct masks with clicks, show masks. Talks to the service's /v1 API only.
// A 2D box (or a first click) starts an object on the service; clicks correct the selected object (shift-click or
// the "remove" mode: the object does not go there). On a volume with "3D" on, the box and a slice range start a 3D
// object: clicks on any of its slices correct it there and the service propagates the change to the other slices.
// A 3D object's mask comes as one run-length code over the volume; each slice is decoded from it when shown.
"use strict";

const COLORS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180], [70, 240, 240],
                [240, 50, 230], [210, 245, 60]];
const state = { image: null, slice: 0, picture: null, boxes: [], drag: null, scale: 1, busy: false, selected: -1,
                zRangeSet: false };
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
  state.selected = state.boxes.length - 1;
  const volume = state.image.kind === "3d";
  $("slice-controls").hidden = !volume;
  $("slice").max = $("z-from").max = $("z-to").max = state.image.slices - 1;
  state.zRangeSet = false;
  await showSlice(volume ? Math.floor(state.image.slices / 2) : 0);
  setStatus(`${file.name}: ${state.image.shape.join(" x ")}${volume ? " (volume)" : ""}. Drag a box around an object.`);
  if (state.boxes.length) await segment();
}

async function showSlice(index) {
  state.slice = index;
  $("slice").value = index;
  $("slice-number").textContent = index;
  if (!state.zRangeSet) {   // a 3D box spans the shown slice +-5 (within the volume) until the user sets its range
    $("z-from").value = Math.max(0, index - 5);
    $("z-to").value = Math.min(state.image.slices - 1, index + 5);
  }
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
  const masks = shownMasks();
  if (masks.length) {
    const [height, width] = state.image.shape.slice(-2);
    const overlay = new ImageData(width, height);
    masks.forEach((mask, k) => {
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
    if (!onSlice(entry)) return;
    const [r, g, b] = COLORS[k % COLORS.length];
    context.strokeStyle = `rgb(${r}, ${g}, ${b})`;
    if (entry.box) {
      const [x0, y0, x1, y1] = entry.box;
      context.setLineDash(k === state.selected ? [] : [4, 3]);
      context.strokeRect(x0 * state.scale, y0 * state.scale, (x1 - x0) * state.scale, (y1 - y0) * state.scale);
      context.setLineDash([]);
    }
    const { points, labels } = entry.object ? clicksOnSlice(entry.object) : { points: [], labels: [] };
    points.forEach(([x, y], i) => {
      context.fillStyle = labels[i] ? "#22dd44" : "#ff3344";
      context.beginPath();
      context.arc(x * state.scale, y * state.scale, 5, 0, 2 * Math.PI);
      context.fill();
      context.stroke();
    });
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
    const answer = entry.object;
    const iou = answer && answer.iou !== null && answer.iou !== undefined ? `, predicted IoU ${answer.iou.toFixed(2)}` : "";
    const clicks = entry.object ? `, ${clickCount(entry.object)} click(s)` : "";
    const where = entry.box3d ? `slices ${zRange(entry).join("-")} (3D)` : `slice ${entry.slice}`;
    const prompt = entry.box ? `[${entry.box.map(Math.round).join(", ")}]` : "from a click";
    item.textContent = `${prompt} ${state.image.kind === "3d" ? where : ""}${clicks}${iou}`;
    item.classList.toggle("selected", k === state.selected);
    item.addEventListener("click", () => { state.selected = k; draw(); });
    $("boxes").appendChild(item);
  });
  const any = state.boxes.length > 0;
  $("undo").disabled = $("clear").disabled = !any;
  $("undo").textContent = hasClickToUndo(state.boxes[state.selected]) ? "Undo last click" : "Remove last object";
  $("download-png").disabled = !any;
  $("download-nifti").disabled = !any || state.image.kind !== "3d";
}

function zRange(entry) {
  // a 3D object's slices as the service took them (rounded, within the volume), or as asked before it answered
  const box = (entry.object && entry.object.box3d) || entry.box3d;
  return [box[2], box[5]];
}

function onSlice(entry) {
  if (!entry.box3d) return entry.slice === state.slice;
  const [z0, z1] = zRange(entry);
  return z0 <= state.slice && state.slice <= z1;
}

function clicksOnSlice(object) {
  // a 2D object's clicks, or a 3D object's clicks on the shown slice
  if (object.kind !== "3d") return { points: object.points, labels: object.labels };
  return object.clicks.find((c) => c.slice === state.slice) || { points: [], labels: [] };
}

function clickCount(object) {
  return object.kind === "3d" ? object.clicks.reduce((n, c) => n + c.points.length, 0) : object.points.length;
}

function requestBody(format) {
  // the 2D boxes of the shown slice, for the segment route
  const boxes = state.boxes.filter((e) => e.slice === state.slice && e.box && !e.box3d);
  const body = { boxes: boxes.map((e) => e.box), format };
  if (state.image.kind === "3d") body.slice = state.slice;
  return body;
}

async function post(path, body) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

function shownMasks() {
  // the masks to draw: 2D objects on their slice, 3D objects on every slice of their range
  return state.boxes.filter((e) => e.object && onSlice(e)).map((e) => ({ rle: e.object.mask, iou: e.object.iou }));
}

async function startObject(entry) {
  let body;
  if (entry.box3d) body = { box3d: entry.box3d };
  else {
    body = entry.box ? { box: entry.box } : { points: [entry.point], labels: [1] };
    if (state.image.kind === "3d") body.slice = entry.slice;
  }
  const response = await post(`/v1/images/${state.image.id}/objects`, body);
  if (!response.ok) { setStatus(await errorText(response), true); return false; }
  entry.object = await response.json();
  return true;
}

async function segment() {
  state.busy = true;
  setStatus("Segmenting...");
  const began = performance.now();
  for (const entry of state.boxes.filter((e) => !e.object && onSlice(e))) {
    if (!(await startObject(entry))) { state.busy = false; return; }
  }
  state.busy = false;
  const count = shownMasks().length;
  draw();
  canvas.dataset.masks = String(count);
  setStatus(`${count} mask(s) in ${((performance.now() - began) / 1000).toFixed(2)} s.` +
            (count ? " Click to add to the selected object, shift-click to remove." : ""));
}

async function click(point, remove) {
  // a click corrects the selected object on this slice (a 3D object on any slice of its range), or starts one
  const selected = state.boxes[state.selected];
  if (!selected || !selected.object || !onSlice(selected)) {
    if (remove) return;
    state.boxes.push({ box: null, point, slice: state.slice });
    state.selected = state.boxes.length - 1;
    await segment();
    return;
  }
  state.busy = true;
  const began = performance.now();
  const url = `/v1/images/${state.image.id}/objects/${selected.object.id}/clicks`;
  const body = { x: point[0], y: point[1], label: remove ? 0 : 1 };
  if (selected.box3d) body.slice = state.slice;
  const response = await post(url, body);
  state.busy = false;
  if (!response.ok) { setStatus(await errorText(response), true); return; }
  selected.object = await response.json();
  draw();
  canvas.dataset.clicks = String(clickCount(selected.object));
  setStatus(`Click answered in ${Math.round(performance.now() - began)} ms ` +
            `(${Math.round(1000 * selected.object.seconds)} ms on the server), predicted IoU ${selected.object.iou.toFixed(2)}.`);
}

function hasClickToUndo(entry) {
  return entry && entry.object && clickCount(entry.object) > (entry.box ? 0 : 1);
}

async function undo() {
  const selected = state.boxes[state.selected];
  if (hasClickToUndo(selected)) {
    const response = await post(`/v1/images/${state.image.id}/objects/${selected.object.id}/undo`, {});
    if (!response.ok) { setStatus(await errorText(response), true); return; }
    selected.object = await response.json();
    canvas.dataset.clicks = String(clickCount(selected.object));
    draw();
    setStatus("Last click undone.");
    return;
  }
  const entry = state.boxes.pop();
  if (entry && entry.object) api(`/v1/images/${state.image.id}/objects/${entry.object.id}`, { method: "DELETE" });
  state.selected = state.boxes.length - 1;
  await segment();
}

function toImage(event) {
  const rect = canvas.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (canvas.width / rect.width);
  const y = (event.clientY - rect.top) * (canvas.height / rect.height);
  return { x: Math.max(0, Math.min(canvas.width, x)), y: Math.max(0, Math.min(canvas.height, y)) };
}

canvas.addEventListener("mousedown", (event) => {
  if (!state.image) return;
  state.shift = event.shiftKey;
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
  if (Math.abs(x1 - x0) < 4 && Math.abs(y1 - y0) < 4) {   // not a drag: a click
    const point = [Math.min(x1 / state.scale, width - 1), Math.min(y1 / state.scale, height - 1)];
    if (!state.busy) await click(point, state.shift || $("remove-mode").checked);
    return;
  }
  if (box[2] - box[0] < 2 || box[3] - box[1] < 2) { draw(); return; }
  const entry = { box, slice: state.slice };
  if (state.image.kind === "3d" && $("box-3d").checked) {
    const last = state.image.slices - 1;
    const clamp = (value) => Math.max(0, Math.min(last, Math.round(Number(value) || 0)));
    const [z0, z1] = [clamp($("z-from").value), clamp($("z-to").value)].sort((a, b) => a - b);
    entry.box3d = [box[0], box[1], z0, box[2], box[3], z1];
  }
  state.boxes.push(entry);
  state.selected = state.boxes.length - 1;
  await segment();
});

$("file").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
// masks are held here (a 3D object's slices decoded from its run lengths): scrolling only redraws
$("slice").addEventListener("input", (event) => showSlice(Number(event.target.value)).then(draw));
["z-from", "z-to"].forEach((id) => $(id).addEventListener("input", () => { state.zRangeSet = true; }));
$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", () => {
  state.boxes.filter((e) => e.object).forEach((e) => api(`/v1/images/${state.image.id}/objects/${e.object.id}`, { method: "DELETE" }));
  state.boxes = []; state.selected = -1; draw();
});
document.addEventListener("dragover", (event) => { event.preventDefault(); document.body.classList.add("dragging"); });
document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
document.addEventListener("drop", (event) => {
  event.preventDefault();
  document.body.classList.remove("dragging");
  if (event.dataTransfer.files[0]) upload(event.dataTransfer.files[0]);
});

async function labelsPng() {
  // the objects on this slice as a label PNG: one object 0/255, several their numbers 1..n
  const [height, width] = state.image.shape.slice(-2);
  const masks = shownMasks();
  const labels = new ImageData(width, height);
  for (let i = 3; i < labels.data.length; i += 4) labels.data[i] = 255;
  masks.forEach((mask, k) => {
    const value = masks.length === 1 ? 255 : k + 1;
    const bits = maskOnSlice(mask.rle);
    for (let i = 0; i < bits.length; i++) if (bits[i]) labels.data.set([value, value, value], 4 * i);
  });
  const layer = new OffscreenCanvas(width, height);
  layer.getContext("2d").putImageData(labels, 0, 0);
  return layer.convertToBlob({ type: "image/png" });
}

async function download(format, suffix) {
  // PNG: what the page shows on this slice, clicks included; NIfTI: the selected 3D object (clicks included), or
  // the 2D boxes of this slice placed in the volume
  const selected = state.boxes[state.selected];
  let blob;
  if (format === "png") {
    blob = await labelsPng();
  } else {
    const response = selected && selected.box3d && selected.object
      ? await api(`/v1/images/${state.image.id}/objects/${selected.object.id}?format=nifti`)
      : await post(`/v1/images/${state.image.id}/segment`, requestBody(format));
    if (!response.ok) { setStatus(await errorText(response), true); return; }
    blob = await response.blob();
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${state.image.name.replace(/\.[^.]*$/, "").replace(/\.nii$/, "")}_mask${suffix}`;
  link.click();
}
$("download-png").addEventListener("click", () => download("png", ".png"));
$("download-nifti").addEventListener("click", () => download("nifti", ".nii.gz"));
