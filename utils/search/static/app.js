// The search page of `search.py serve`: plain JavaScript, no build step.
// Every text from the index (file names, classes, captions, sentences) reaches the page through
// textContent or an attribute, never as HTML. The URL holds the query, so a search can be shared.
"use strict";

const $ = (id) => document.getElementById(id);
const CAPTIONS = "captions";
let info = null; // GET /api/index
let current = null; // {kind: "text", text} | {kind: "row", row, modality} | {kind: "image", file}
let latest = 0; // number of the latest request: answers to older ones are dropped
let preview = null; // object URL of an uploaded image

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function ticked(container) {
  return [...container.querySelectorAll("input:checked")].map((box) => box.value);
}

function controls() {
  const p = new URLSearchParams();
  p.set("target", $("target").value);
  p.set("k", $("k").value || "20");
  if ($("rerank").checked) p.set("rerank", "1");
  for (const name of ticked($("classes"))) p.append("class", name);
  for (const name of ticked($("splits"))) p.append("split", name);
  return p;
}

function queryParams(q) {
  const p = new URLSearchParams();
  if (q.kind === "text") p.set("text", q.text);
  if (q.kind === "row") {
    p.set("row", String(q.row));
    p.set("modality", q.modality);
  }
  for (const [name, value] of controls()) p.append(name, value);
  return p;
}

function thumbnail(imageRow, alt) {
  if (imageRow === undefined || imageRow === null) return el("div", "missing", "no image");
  const img = document.createElement("img");
  img.loading = "lazy";
  img.decoding = "async";
  img.width = 256;
  img.height = 256;
  img.alt = alt || "";
  img.src = "/api/thumbnail/" + encodeURIComponent(String(imageRow));
  img.addEventListener("error", () => img.replaceWith(el("div", "missing", "no image")), { once: true });
  return img;
}

// ------------------------------------------------------------------------------------------
// the index description: the line under the title, the class and split filters

function chip(container, name, count) {
  const label = el("label", "chip");
  const box = document.createElement("input");
  box.type = "checkbox";
  box.value = name;
  box.addEventListener("change", () => {
    label.classList.toggle("on", box.checked);
    rerun();
  });
  label.append(box, el("span", "", name), el("span", "n", count));
  container.append(label);
}

function describe(d) {
  const ix = d.index || {};
  $("about").textContent =
    `${d.counts.images.toLocaleString()} images and ${d.counts.captions.toLocaleString()} captions as ${d.bit}-bit codes` +
    ` · ${ix.type || "flat"} index · ` +
    (d.checkpoint ? `run ${d.run} (${d.checkpoint.which} checkpoint, epoch ${d.checkpoint.epoch})`
                  : `codes of ${d.codes} (no model: click a result to search by it)`);
  for (const c of d.classes) chip($("classes"), c.name, c.images);
  for (const s of d.splits) chip($("splits"), s.name, s.images);
  $("k").max = String(d.limits.max_k);
  if (!d.encoders.text.available) {
    $("text").disabled = true;
    $("text").placeholder = d.checkpoint ? "this index records no text encoder: search by image or click a result"
                                         : "this index holds codes and no model: click a result to search by it";
  }
  if (!d.checkpoint) {  // codes of a codes file: no continuous outputs to re-rank by
    $("rerank").checked = false;
    $("rerank").disabled = true;
  }
  if (!d.encoders.image.available) {
    $("drop").hidden = true;
  }
}

// ------------------------------------------------------------------------------------------
// the query and its results

function showQuery(q, result) {
  const box = $("query");
  box.replaceChildren();
  box.hidden = false;
  const what = el("div", "what");
  if (q.kind === "text") {
    what.append(el("div", "said", `“${q.text}”`));
  } else if (q.kind === "image") {
    const img = document.createElement("img");
    img.alt = "query image";
    img.src = preview;
    box.append(img);
    what.append(el("div", "file", q.file.name || "uploaded image"));
  } else {
    const seen = result ? result.query : {};
    const imageRow = seen.query_image_row !== undefined ? seen.query_image_row : q.modality === "image" ? q.row : null;
    box.append(thumbnail(imageRow, seen.query_filename || ""));
    what.append(el("div", "file", `more like ${q.modality} row ${q.row}` + (seen.query_filename ? ` · ${seen.query_filename}` : "")));
    if (seen.query_caption) what.append(el("div", "said", `“${seen.query_caption}”`));
  }
  box.append(what);
}

function card(r, target) {
  const node = el("div", "card");
  node.tabIndex = 0;
  node.setAttribute("role", "button");
  node.dataset.row = String(r.row);
  node.title = "search for more like this";
  const imageRow = target === CAPTIONS ? r.image_row : r.row;
  node.append(thumbnail(r.path ? imageRow : null, r.filename));
  const top = el("div", "top");
  top.append(el("span", "rank", `#${r.rank}`));
  top.append(el("span", "dist", `Hamming ${r.distance}` + (r.cosine !== undefined ? ` · cos ${r.cosine.toFixed(3)}` : "")));
  node.append(top);
  node.append(el("div", "file", r.filename ? `${r.filename} (row ${r.row})` : `row ${r.row}`));
  const cls = el("div", "cls", r.class === null || r.class === undefined ? "no class" : r.class);
  if (r.split) cls.append(el("span", "split", ` · ${r.split}`));
  node.append(cls);
  if (r.caption) {
    const caption = el("div", "caption", r.caption);
    caption.title = r.caption;
    node.append(caption);
  }
  const go = () => search({ kind: "row", row: r.row, modality: target === CAPTIONS ? "caption" : "image" });
  node.addEventListener("click", go);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      go();
    }
  });
  return node;
}

function render(result, ms) {
  const target = result.query.target;
  const grid = $("results");
  grid.replaceChildren(...result.results.map((r) => card(r, target)));
  const filters = result.query.filters || {};
  const only = Object.entries(filters).map(([name, values]) => `${name} ${values.join(" or ")}`).join(", ");
  const how = result.query.rerank ? "re-ranked by cosine" : "by Hamming distance";
  say(result.results.length
    ? `${result.results.length} nearest ${target} ${how}${only ? " · only " + only : ""} · ${Math.round(ms)} ms`
    : `no ${target} match${only ? " " + only : ""}`);
}

async function search(q, push = true) {
  current = q;
  const params = queryParams(q);
  if (push) {
    const url = "?" + (q.kind === "image" ? controls() : params).toString();
    if (url !== location.search) history.pushState(null, "", url);
  }
  if (q.kind === "text") $("text").value = q.text;
  showQuery(q, null);
  const mine = ++latest;
  say("searching…");
  const start = performance.now();
  try {
    let answer;
    if (q.kind === "image") {
      if (info && q.file.size > info.limits.max_upload_bytes) {
        say(`the image is ${q.file.size.toLocaleString()} bytes; the limit is ${info.limits.max_upload_bytes.toLocaleString()}`, true);
        return;
      }
      answer = await fetch("/api/search?" + params, {
        method: "POST", body: q.file, headers: { "Content-Type": "application/octet-stream" },
      });
    } else {
      answer = await fetch("/api/search?" + params);
    }
    const body = await answer.json().catch(() => ({ error: `${answer.status} ${answer.statusText}` }));
    if (mine !== latest) return;
    if (!answer.ok) {
      $("results").replaceChildren();
      say(body.error || `${answer.status} ${answer.statusText}`, true);
      return;
    }
    if (q.kind === "row") showQuery(q, body);
    render(body, performance.now() - start);
  } catch (err) {
    if (mine === latest) say(`the server did not answer: ${err}`, true);
  }
}

function rerun() {
  if (current) search(current);
  else history.replaceState(null, "", "?" + controls());
}

function searchFile(file) {
  if (!file) return;
  if (preview) URL.revokeObjectURL(preview);
  preview = URL.createObjectURL(file);
  $("text").value = "";
  search({ kind: "image", file });
}

// ------------------------------------------------------------------------------------------
// the URL: controls and query read back (on load, back and forward)

function fromUrl() {
  const p = new URLSearchParams(location.search);
  $("target").value = p.get("target") === CAPTIONS ? CAPTIONS : "images";
  $("k").value = p.get("k") || "20";
  $("rerank").checked = ["1", "true", "yes", "on"].includes((p.get("rerank") || "").toLowerCase());
  for (const [container, name] of [[$("classes"), "class"], [$("splits"), "split"]]) {
    const wanted = new Set(p.getAll(name));
    for (const box of container.querySelectorAll("input")) {
      box.checked = wanted.has(box.value);
      box.parentElement.classList.toggle("on", box.checked);
    }
  }
  $("text").value = p.get("text") || "";
  if (p.has("text")) return { kind: "text", text: p.get("text") };
  if (p.has("row")) return { kind: "row", row: p.get("row"), modality: p.get("modality") === "caption" ? "caption" : "image" };
  return null;
}

function restore() {
  const q = fromUrl();
  current = q;
  if (q) {
    search(q, false);
  } else {
    $("query").hidden = true;
    $("results").replaceChildren();
    say("");
  }
}

async function start() {
  try {
    const answer = await fetch("/api/index");
    info = await answer.json();
    if (!answer.ok) throw new Error(info.error || answer.statusText);
    describe(info);
  } catch (err) {
    say(`cannot read the index description: ${err}`, true);
  }
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text").value.trim();
    if (text) search({ kind: "text", text });
    else if (current && current.kind !== "text") search(current);
    else say("type a sentence, drop an image, or open a result", true);
  });
  for (const id of ["k", "target", "rerank"]) $(id).addEventListener("change", rerun);
  $("file").addEventListener("change", () => searchFile($("file").files[0]));
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) drop.addEventListener(name, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    searchFile(event.dataTransfer.files[0]);
  });
  window.addEventListener("popstate", restore);
  restore();
}

start();
