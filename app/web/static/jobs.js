// The job list follows its jobs: while one is queued or running, the rows are refreshed from /v1/jobs
// every few seconds (the session cookie authenticates), with phase, epoch, ETA and, once done, the
// validation Dice, corrections and warnings.
"use strict";

(function () {
  const table = document.getElementById("jobs");
  if (!table) return;
  const note = document.getElementById("jobs-refresh");
  const live = new Set(["queued", "running"]);
  const EVERY_MS = 3000;

  function progress(job) {
    if (job.status === "queued") return "waiting for a worker";
    const parts = [job.phase || ""];
    if (job.epoch != null && job.total_epochs != null) parts.push(`epoch ${job.epoch} of ${job.total_epochs}`);
    if (job.eta_seconds != null) parts.push(`about ${Math.max(1, Math.round(job.eta_seconds / 60))} min left`);
    if (job.status === "failed" && job.error) parts.push(job.error.slice(0, 80));
    return parts.filter(Boolean).join(" · ");
  }

  function validation(job) {
    const v = job.quality && job.quality.validation;
    if (!v) return "–";
    const classes = Object.entries(v.per_class || {});
    const detail = classes.length > 1 ? " (" + classes.map(([n, d]) => `${n} ${d.toFixed(2)}`).join(", ") + ")" : "";
    return v.dice.toFixed(3) + detail;
  }

  function update(row, job) {
    const status = row.querySelector(".status");
    status.textContent = job.status;
    status.className = `status ${job.status}`;
    row.querySelector(".progress").textContent = progress(job);
    row.querySelector(".validation").textContent = validation(job);
    const q = job.quality || {};
    row.querySelector(".corrections").textContent = (q.corrections && q.corrections.status) || "–";
    row.querySelector(".warnings").textContent = (q.warnings || []).map((w) => w.code).join(", ") || "–";
  }

  async function refresh() {
    const rows = [...table.querySelectorAll("tbody tr")];
    if (!rows.some((r) => live.has(r.querySelector(".status").textContent))) {
      note.textContent = "";
      return;
    }
    try {
      const response = await fetch("/v1/jobs?limit=200", { credentials: "same-origin" });
      if (!response.ok) throw new Error(response.statusText);
      const byId = new Map((await response.json()).items.map((j) => [j.id, j]));
      for (const row of rows) {
        const job = byId.get(row.dataset.job);
        if (job) update(row, job);
      }
      note.textContent = `Updated ${new Date().toLocaleTimeString()}; the list follows running jobs.`;
    } catch (error) {
      note.textContent = `Could not refresh: ${error.message}`;
    }
    setTimeout(refresh, EVERY_MS);
  }

  setTimeout(refresh, EVERY_MS);
})();
