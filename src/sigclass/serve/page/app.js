// Quick test page: sends the chosen file to /predict and shows the class, the probabilities, the
// prediction set, whether the input is unknown (far from the training data) and the class
// activation map; for a detection model, the boxes over the photo with their class and score.
"use strict";

const $ = (id) => document.getElementById(id);
let task = "classification";
let classes = [];
// one colour per class of a detection model, in the order of /metadata's classes
const PALETTE = ["#e07a1f", "#3a7bd5", "#2e9e4f", "#b3261e", "#7b4bb7", "#c2185b", "#00897b", "#6d4c41"];

function headers() {
  const key = $("apikey").value;
  return key ? { "X-API-Key": key } : {};
}

async function loadMetadata() {
  const response = await fetch("/metadata", { headers: headers() });
  const body = await response.json();
  if (!response.ok) {
    $("model").textContent = body.message || "Cannot read the model description.";
    return;
  }
  task = body.task || "classification";
  classes = body.classes;
  $("model").textContent = `Model ${body.model.name} (version ${body.model.version}), ` +
    `${body.modality}${task === "detection" ? " detection" : ""}, classes: ${body.classes.join(", ")}`;
  // The page draws boxes only; their maps come from the API (?explain=true), not shown here.
  $("explain-label").hidden = task === "detection";
  $("threshold-label").hidden = task !== "detection";
  $("submit").textContent = task === "detection" ? "Detect" : "Classify";
  // The model's modality says what to upload (Modality.input_spec on the server).
  $("file").accept = body.input.accept;
  $("accepts").textContent = body.input.description;
}

function showBars(probabilities, predicted) {
  const bars = $("bars");
  bars.replaceChildren();
  const entries = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [name, p] of entries) {
    const row = document.createElement("div");
    row.className = "bar" + (name === predicted ? " top" : "");
    row.dataset.class = name;
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(label, track, value);
    bars.append(row);
  }
}

async function classify(event) {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  $("status").className = "";
  $("status").textContent = task === "detection" ? "Detecting…" : "Classifying…";
  $("result").hidden = true;
  $("detections").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  let url = "/predict" + (task !== "detection" && $("explain").checked ? "?explain=true" : "");
  if (task === "detection" && $("threshold").value !== "") {
    url += `?score_threshold=${encodeURIComponent($("threshold").value)}`;
  }
  let body;
  try {
    const response = await fetch(url, { method: "POST", body: form, headers: headers() });
    body = await response.json();
    if (!response.ok) throw new Error(body.message || `HTTP ${response.status}`);
  } catch (error) {
    $("status").className = "error";
    $("status").textContent = `Error: ${error.message}`;
    return;
  }
  $("status").textContent = "";
  if (task === "detection") {
    await showBoxes(file, body.boxes);
    return;
  }
  const top = Object.entries(body.probabilities).sort((a, b) => b[1] - a[1])[0][0];
  // class null: the service rejects unknown inputs (--reject-unknown)
  $("predicted").textContent = body["class"] === null ? "none (unknown input)" : body["class"];
  $("confidence").textContent = `${(100 * body.confidence).toFixed(1)}%`;
  showBars(body.probabilities, body["class"] === null ? top : body["class"]);
  $("unknown").hidden = body.unknown !== true;
  $("set").hidden = !body.prediction_set;
  $("set-classes").textContent = body.prediction_set ? `{${body.prediction_set.join(", ")}}` : "";
  $("ood").hidden = body.ood_score === null || body.ood_score === undefined;
  $("ood").textContent = $("ood").hidden ? "" :
    `Out-of-distribution score ${body.ood_score.toFixed(3)}` +
    (body.unknown ? ": far from the training data" : ": like the training data");
  const explanation = body.explanation;
  $("figure").hidden = !explanation;
  if (explanation) {
    $("overlay").src = `data:image/png;base64,${explanation.overlay_png_base64}`;
    $("caption").textContent = `${explanation.method} map of class ${explanation.target}`;
  }
  $("result").hidden = false;
}

// Boxes come in the photo's own pixels: placed in percent of its natural size, they follow the
// photo however large it is drawn.
async function showBoxes(file, boxes) {
  const photo = $("photo");
  if (photo.src) URL.revokeObjectURL(photo.src);
  photo.src = URL.createObjectURL(file);
  await photo.decode();
  const width = photo.naturalWidth, height = photo.naturalHeight;
  const frame = $("photo-boxes");
  frame.querySelectorAll(".box").forEach((box) => box.remove());
  for (const b of boxes) {
    const box = document.createElement("div");
    box.className = "box";
    box.dataset.class = b["class"];
    box.style.setProperty("--colour", PALETTE[Math.max(0, classes.indexOf(b["class"])) % PALETTE.length]);
    box.style.left = `${(100 * b.xmin / width).toFixed(3)}%`;
    box.style.top = `${(100 * b.ymin / height).toFixed(3)}%`;
    box.style.width = `${(100 * (b.xmax - b.xmin) / width).toFixed(3)}%`;
    box.style.height = `${(100 * (b.ymax - b.ymin) / height).toFixed(3)}%`;
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = `${b["class"]} ${(100 * b.score).toFixed(0)}%`;
    box.append(label);
    frame.append(box);
  }
  $("found").textContent = `${boxes.length} object${boxes.length === 1 ? "" : "s"} found`;
  $("detections").hidden = false;
}

$("form").addEventListener("submit", classify);
$("apikey").addEventListener("change", loadMetadata);
loadMetadata();
