// The review page: loads a job's noise report and decisions from the /v1 API (the session cookie
// authenticates; the CSRF token goes with every change), shows one card per mask, most suspicious
// first, and records decisions from the keyboard or the buttons.
"use strict";

(function () {
  const root = document.getElementById("review");
  if (!root || !document.getElementById("grid")) return;
  const job = root.dataset.job;
  const datasetId = root.dataset.dataset;
  const csrf = root.dataset.csrf;
  const grid = document.getElementById("grid");
  const statusLine = document.getElementById("status");
  const views = ["both", "given", "proposed"];
  const labels = {
    accept_correction: "correction accepted",
    keep_original: "original kept",
    needs_reannotation: "needs re-annotation",
  };
  const PAGE = 48; // cards per page: 300 masks make 7 pages, not one 28,000 px page
  let rows = [];
  let matching = []; // the rows the filters let through
  let shown = []; // those of the current page
  let page = 0;
  let focus = 0;

  async function api(method, path, body) {
    const init = { method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (!response.ok) {
      let detail = response.statusText;
      try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return response.status === 204 ? null : response.json();
  }

  function say(text, error) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", Boolean(error));
  }

  async function load() {
    // Read the whole report first: the cards on screen stay (and filters work on them) until it is in.
    const fresh = [];
    for (let offset = 0; ; offset += 1000) {
      const page = await api("GET", `/v1/jobs/${job}/noise-report?limit=1000&offset=${offset}`);
      fresh.push(...page.items);
      if (fresh.length >= page.total || page.items.length === 0) break;
    }
    rows = fresh;
    fillSelect("filter-annotator", rows.map((r) => r.annotator));
    fillSelect("filter-batch", rows.map((r) => r.batch_id), (id) => id.slice(0, 8));
    render();
  }

  function fillSelect(id, values, label) {
    const select = document.getElementById(id);
    const keep = select.value;
    select.length = 1;
    for (const value of [...new Set(values)].sort()) {
      select.add(new Option(label ? label(value) : value, value));
    }
    select.value = keep;
  }

  function visible(row) {
    const show = document.getElementById("filter-show").value;
    const annotator = document.getElementById("filter-annotator").value;
    const batch = document.getElementById("filter-batch").value;
    if (show === "flagged" && !row.flagged) return false;
    if (show === "proposed" && !row.correction_proposed) return false;
    if (show === "undecided" && row.decision) return false;
    if (annotator && row.annotator !== annotator) return false;
    if (batch && row.batch_id !== batch) return false;
    return true;
  }

  function imageUrl(row) {
    const view = document.getElementById("view").value;
    return `/v1/jobs/${job}/overlays/${row.sample_id}.png?show=${view}`;
  }

  function card(row, index) {
    const item = document.createElement("article");
    item.className = "card" + (row.flagged ? " flagged" : "");
    item.tabIndex = -1;
    item.setAttribute("role", "listitem");
    item.dataset.sample = row.sample_id;
    item.dataset.index = String(index);
    const changed = row.changed_pixels == null ? "–" : `${row.changed_pixels} px (${(100 * row.changed_fraction).toFixed(0)} %)`;
    item.innerHTML = `
      <img alt="" loading="lazy">
      <div class="meta">
        <div class="name"></div>
        <div>clean p <strong>${row.clean_probability.toFixed(3)}</strong> · score ${row.loss.toFixed(3)} · ${row.held_out ? "held back (never trained on)" : `split ${row.round_decided}`}${row.decided_by && !row.held_out ? ` · ${row.decided_by}` : ""}</div>
        <div class="proposal"></div>
        <div class="structure"></div>
        <div class="annotator"></div>
        <div class="decision"></div>
        <div class="actions">
          <button type="button" data-d="accept_correction" ${row.correction_proposed ? "" : "disabled"}>Accept (a)</button>
          <button type="button" data-d="keep_original">Keep (o)</button>
          <button type="button" data-d="needs_reannotation">Re-annotate (r)</button>
        </div>
      </div>`;
    item.querySelector("img").src = imageUrl(row);
    item.querySelector("img").alt = `${row.file_name}: image with the given mask` + (row.correction_proposed ? " and the proposed correction" : "");
    item.querySelector(".name").textContent = row.file_name;
    item.querySelector(".annotator").textContent = `annotator ${row.annotator}`;
    // A flagged mask without a proposal says why the gate held its correction back.
    item.querySelector(".proposal").textContent = row.correction_proposed
      ? `proposed change ${changed}`
      : row.flagged
        ? `flagged, no correction proposed${row.withheld_because ? `: ${row.withheld_because}` : ""}`
        : "not flagged";
    // Several structures: the one whose outline agrees least with the network's, and all of them on hover.
    const structure = item.querySelector(".structure");
    if (row.worst_class) {
      structure.textContent = `least agreement: ${row.worst_class} (Dice ${row.worst_class_dice.toFixed(2)})`;
      structure.title = row.classes.map((c) => `${c.name} ${c.dice_to_prediction.toFixed(2)}`).join(" · ");
    } else {
      structure.remove();
    }
    paintDecision(item, row);
    item.addEventListener("click", (event) => {
      setFocus(Number(item.dataset.index));
      const choice = event.target.dataset && event.target.dataset.d;
      if (choice) decide(choice);
    });
    return item;
  }

  function paintDecision(item, row) {
    const badge = item.querySelector(".decision");
    badge.textContent = row.decision ? labels[row.decision] : "undecided";
    item.dataset.decision = row.decision || "";
  }

  function pages() {
    return Math.max(1, Math.ceil(matching.length / PAGE));
  }

  function render() {
    matching = rows.filter(visible);
    page = Math.min(page, pages() - 1);
    shown = matching.slice(page * PAGE, (page + 1) * PAGE);
    if (shown.length) {
      grid.replaceChildren(...shown.map(card));
    } else {
      const empty = document.createElement("p");
      empty.className = "empty";
      empty.textContent = rows.length
        ? `No mask matches these filters (${rows.length} masks in all): change or clear a filter above.`
        : "This job's report has no masks.";
      grid.replaceChildren(empty);
    }
    const decided = rows.filter((r) => r.decision).length;
    document.getElementById("counts").textContent =
      `${matching.length} shown · ${rows.filter((r) => r.flagged).length} flagged · ` +
      `${rows.filter((r) => r.correction_proposed).length} proposed · ${decided} of ${rows.length} decided`;
    document.getElementById("page-label").textContent = `page ${page + 1} of ${pages()}`;
    document.getElementById("page-prev").disabled = page === 0;
    document.getElementById("page-next").disabled = page >= pages() - 1;
    setFocus(Math.min(focus, Math.max(shown.length - 1, 0)));
  }

  function turn(delta, at) {
    const next = page + delta;
    if (next < 0 || next >= pages()) return false;
    page = next;
    focus = at === "end" ? PAGE - 1 : 0;
    render();
    grid.scrollIntoView({ block: "start" });
    return true;
  }

  function move(step) {
    // Past the first or last card of a page, the next page comes.
    if (focus + step >= shown.length && turn(1, "start")) return;
    if (focus + step < 0 && turn(-1, "end")) return;
    setFocus(focus + step);
  }

  function setFocus(index) {
    const cards = grid.querySelectorAll(".card");
    if (!cards.length) return;
    focus = Math.max(0, Math.min(index, cards.length - 1));
    for (const c of cards) c.classList.remove("focused");
    cards[focus].classList.add("focused");
    cards[focus].focus({ preventScroll: true });
    cards[focus].scrollIntoView({ block: "nearest" });
  }

  async function decide(choice) {
    const index = focus;
    const row = shown[index];
    if (!row) return;
    if (choice === "accept_correction" && !row.correction_proposed) {
      say(`${row.file_name}: no correction is proposed; keep it or send it for re-annotation.`, true);
      return;
    }
    try {
      const saved = await api("PUT", `/v1/jobs/${job}/decisions/${row.sample_id}`, { decision: choice });
      row.decision = saved.decision;
      paintDecision(grid.children[index], row);
      say(`${row.file_name}: ${labels[choice]}.`);
      // Move on, unless the reviewer has moved elsewhere while the decision was saved.
      if (focus === index) move(1);
      updateCounts();
    } catch (error) {
      say(`${row.file_name}: ${error.message}`, true);
    }
  }

  async function undo() {
    const index = focus;
    const row = shown[index];
    if (!row || !row.decision) return;
    try {
      await api("DELETE", `/v1/jobs/${job}/decisions/${row.sample_id}`);
      row.decision = null;
      paintDecision(grid.children[index], row);
      say(`${row.file_name}: decision withdrawn.`);
      updateCounts();
    } catch (error) {
      say(`${row.file_name}: ${error.message}`, true);
    }
  }

  function updateCounts() {
    const decided = rows.filter((r) => r.decision).length;
    const counts = document.getElementById("counts");
    counts.textContent = counts.textContent.replace(/\d+ of \d+ decided/, `${decided} of ${rows.length} decided`);
  }

  function toggleView() {
    const select = document.getElementById("view");
    select.value = views[(views.indexOf(select.value) + 1) % views.length];
    refreshImages();
  }

  function refreshImages() {
    shown.forEach((row, i) => { grid.children[i].querySelector("img").src = imageUrl(row); });
    document.querySelectorAll("figure.volume").forEach(showSlice);
  }

  // A volume's viewer: the slider (or a flagged slice's button) picks the slice whose overlay is shown.
  function showSlice(figure) {
    const ids = figure.dataset.samples.split(",");
    const slider = figure.querySelector("input[type=range]");
    const k = Number(slider.value);
    const view = document.getElementById("view").value;
    const listed = (name) => (figure.dataset[name] ? figure.dataset[name].split(",").map(Number) : []);
    const flagged = listed("flagged").includes(k);
    const corrected = listed("corrected").includes(k);
    figure.querySelector("img").src = `/v1/jobs/${job}/overlays/${ids[k]}.png?show=${view}`;
    figure.querySelector("img").alt = `slice ${k} of ${figure.dataset.volume} with its masks`;
    figure.querySelector("output").textContent = String(k);
    const state = figure.querySelector(".slice-state");
    state.textContent = flagged ? (corrected ? "flagged · correction proposed" : "flagged") : "not flagged";
    state.classList.toggle("flagged", flagged);
  }

  document.querySelectorAll("figure.volume").forEach((figure) => {
    const slider = figure.querySelector("input[type=range]");
    slider.addEventListener("input", () => showSlice(figure));
    figure.querySelectorAll("button.jump").forEach((button) => {
      button.addEventListener("click", () => { slider.value = button.dataset.slice; showSlice(figure); });
    });
    showSlice(figure);
  });

  async function bulk(rule) {
    const body = { rule };
    if (rule === "accept_proposed_above") body.min_noise_probability = Number(document.getElementById("bulk-p").value);
    try {
      const result = await api("POST", `/v1/jobs/${job}/decisions/bulk`, body);
      await load();
      say(`${result.decided} masks decided.`);
    } catch (error) {
      say(error.message, true);
    }
  }

  async function curate() {
    const undecided = document.getElementById("undecided").value;
    try {
      const batch = await api("POST", `/v1/jobs/${job}/curated-batches`, { undecided });
      const base = `/v1/datasets/${datasetId}/annotation-batches/${batch.id}`;
      const box = document.getElementById("versions");
      box.hidden = false;
      const item = document.createElement("li");
      item.dataset.batch = batch.id;
      item.innerHTML = `<strong>new</strong>: batch <code></code>, ${batch.report.accepted} masks
        (${Object.entries(batch.provenance.masks).map(([k, v]) => `${v} ${k.replace("_", " ")}`).join(", ")}) ·
        export <a id="export-nnunet" href="${base}/export?format=nnunet">nnU-Net v2 (zip)</a> ·
        <a id="export-coco" href="${base}/export?format=coco">COCO JSON</a> ·
        <a id="export-png" href="${base}/export?format=png">PNG masks (zip)</a>`;
      item.querySelector("code").textContent = batch.id;
      document.getElementById("version-list").append(item);
      say("Curated version created; the original batches are unchanged.");
    } catch (error) {
      say(error.message, true);
    }
  }

  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
    const actions = {
      ArrowRight: () => move(1), j: () => move(1),
      ArrowLeft: () => move(-1), k: () => move(-1),
      n: () => turn(1, "start"), p: () => turn(-1, "start"),
      a: () => decide("accept_correction"), o: () => decide("keep_original"),
      r: () => decide("needs_reannotation"), u: () => undo(), t: () => toggleView(),
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });
  for (const id of ["filter-show", "filter-annotator", "filter-batch"]) {
    document.getElementById(id).addEventListener("change", () => { focus = 0; page = 0; render(); });
  }
  document.getElementById("view").addEventListener("change", refreshImages);
  document.getElementById("bulk-keep").addEventListener("click", () => bulk("keep_unflagged"));
  document.getElementById("bulk-accept").addEventListener("click", () => bulk("accept_proposed_above"));
  document.getElementById("curate").addEventListener("click", curate);
  document.getElementById("page-prev").addEventListener("click", () => turn(-1, "start"));
  document.getElementById("page-next").addEventListener("click", () => turn(1, "start"));
  load().then(() => say(`${rows.length} masks loaded, most suspicious first.`), (error) => say(error.message, true));
})();
