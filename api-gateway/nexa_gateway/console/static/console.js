// The Nexa console's only script: live job status, live logs, the copy button.
// Written for this project; no framework. Everything from the API goes in with textContent, never as markup.
"use strict";

(function () {
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const POLL_MS = 2000;

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function when(value) {
    const text = String(value || "");
    return text.length >= 19 ? text.slice(0, 19).replace("T", " ") + "Z" : text;
  }

  async function getJson(url) {
    const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign("/console/signin");
      return null;
    }
    if (!response.ok) return null;
    return response.json();
  }

  function statusSpan(status) {
    return el("span", status, "status status-" + status);
  }

  // ---- jobs list: re-render the rows from GET /console/api/jobs
  function jobRow(job) {
    const row = document.createElement("tr");
    row.dataset.jobId = job.job_id;
    const link = el("a", job.job_id);
    link.href = "/console/jobs/" + encodeURIComponent(job.job_id);
    const cells = [link, el("span", job.job_type), statusSpan(job.status)];
    const progress = document.createElement("progress");
    progress.max = 1;
    progress.value = job.progress || 0;
    const progressCell = el("span");
    progressCell.append(progress, " ", el("span", job.progress_message || "", "muted"));
    cells.push(progressCell);
    const labels = el("span");
    for (const [key, value] of Object.entries(job.labels || {})) {
      labels.append(el("span", key + "=" + value, "tag"), " ");
    }
    cells.push(labels, el("span", when(job.created_at)));
    for (const content of cells) {
      const td = document.createElement("td");
      td.append(content);
      row.append(td);
    }
    return row;
  }

  function startJobsList() {
    const table = document.getElementById("jobs");
    const empty = document.getElementById("jobs-empty");
    const query = table.dataset.query ? "?" + table.dataset.query : "";
    async function refresh() {
      const data = await getJson("/console/api/jobs" + query);
      if (data && Array.isArray(data.items)) {
        const body = table.tBodies[0];
        body.replaceChildren(...data.items.map(jobRow));
        table.hidden = data.items.length === 0;
        empty.hidden = data.items.length !== 0;
      }
      window.setTimeout(refresh, POLL_MS);
    }
    window.setTimeout(refresh, POLL_MS);
  }

  // ---- one job: status poll and the log stream
  function showJob(job) {
    const status = document.getElementById("job-status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
    document.getElementById("job-progress").value = job.progress || 0;
    document.getElementById("job-progress-message").textContent = job.progress_message || "";
    document.getElementById("job-attempts").textContent =
      job.attempts + " (retries allowed: " + job.max_retries + ")";
    const error = document.getElementById("job-error");
    error.hidden = !job.error;
    error.textContent = job.error ? job.error.code + ": " + job.error.message : "";
    if (job.result) {
      const result = document.getElementById("job-result");
      result.textContent = JSON.stringify(job.result, null, 2);
      result.hidden = false;
      document.getElementById("job-result-empty").hidden = true;
    }
    if (job.artifacts_uri) {
      const artifacts = document.getElementById("job-artifacts");
      artifacts.replaceChildren(el("code", job.artifacts_uri));
    }
    const events = document.getElementById("job-events");
    events.replaceChildren(
      ...(job.events || []).map(function (e) {
        const item = el("li");
        item.append(el("time", when(e.at)), " ", el("b", e.kind), " ", e.message || "");
        return item;
      })
    );
    const cancel = document.getElementById("cancel-form");
    if (cancel && TERMINAL.has(job.status)) cancel.hidden = true;
  }

  function startJob() {
    const box = document.getElementById("job");
    const id = box.dataset.jobId;
    async function refresh() {
      const job = await getJson("/console/api/jobs/" + encodeURIComponent(id));
      if (job) showJob(job);
      if (!job || !TERMINAL.has(job.status)) window.setTimeout(refresh, POLL_MS);
    }
    if (box.dataset.terminal !== "true") window.setTimeout(refresh, POLL_MS);

    const logs = document.getElementById("logs");
    const state = document.getElementById("logs-state");
    const source = new EventSource(logs.dataset.src);
    source.addEventListener("log", function (event) {
      const data = JSON.parse(event.data);
      const near = logs.scrollHeight - logs.scrollTop - logs.clientHeight < 40;
      logs.append(el("div", data.line));
      if (near) logs.scrollTop = logs.scrollHeight;
      state.textContent = "Streaming…";
    });
    source.addEventListener("end", function (event) {
      source.close();
      const data = JSON.parse(event.data);
      state.textContent = "The job ended (" + data.status + ")" + (logs.childElementCount ? "." : "; it wrote no log lines.");
      state.dataset.ended = "true";
    });
    source.addEventListener("failed", function (event) {
      source.close();
      state.textContent = JSON.parse(event.data).message;
    });
  }

  // ---- the copy button of a new key
  function startCopy() {
    for (const button of document.querySelectorAll("button[data-copy]")) {
      button.addEventListener("click", async function () {
        const text = document.getElementById(button.dataset.copy).textContent;
        try {
          await navigator.clipboard.writeText(text);
          button.textContent = "Copied";
        } catch (_) {
          const range = document.createRange();
          range.selectNodeContents(document.getElementById(button.dataset.copy));
          window.getSelection().removeAllRanges();
          window.getSelection().addRange(range);
          button.textContent = "Selected: press Ctrl+C";
        }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const page = document.body.dataset.page;
    if (page === "jobs") startJobsList();
    if (page === "job") startJob();
    startCopy();
  });
})();
