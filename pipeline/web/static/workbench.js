// The review grid worked with the keyboard: arrows move, space selects, shift-click selects a
// range, Enter accepts the suggestion (or sets the typed value), letters type a value, u undoes.
(function () {
  "use strict";
  const grid = document.getElementById("grid");
  if (!grid) return;
  const csrf = document.body.dataset.csrf;
  const attribute = grid.dataset.attribute;
  const query = grid.dataset.query;
  const canLabel = grid.dataset.canLabel === "1";
  const choices = JSON.parse(document.getElementById("choices").textContent);
  const cells = Array.from(grid.querySelectorAll(".cell"));
  const typed = document.getElementById("typed");
  const status = document.getElementById("status");
  const remaining = document.getElementById("remaining");
  const undoStack = [];
  let cursor = 0, anchor = 0, buffer = "";

  const key = (s) => s.toLowerCase().replace(/[^0-9a-z]+/g, "");
  function match(text) {
    const wanted = key(text);
    if (!wanted) return null;
    for (const c of choices) if (key(c.value).startsWith(wanted)) return c.value;
    for (const c of choices) for (const a of c.aliases) if (key(a).startsWith(wanted)) return c.value;
    return null;
  }
  function moveTo(i) {
    if (!cells.length) return;
    cells[cursor].classList.remove("cursor");
    cursor = Math.max(0, Math.min(cells.length - 1, i));
    cells[cursor].classList.add("cursor");
    cells[cursor].scrollIntoView({ block: "nearest" });
  }
  function columns() {
    const top = cells[0].offsetTop;
    const n = cells.findIndex((c) => c.offsetTop !== top);
    return n === -1 ? cells.length : n;
  }
  function targets() {
    const chosen = cells.filter((c) => c.classList.contains("selected"));
    return chosen.length ? chosen : (cells.length ? [cells[cursor]] : []);
  }
  function say(text) { status.textContent = text; }
  function showTyped() {
    typed.textContent = buffer ? `${buffer} → ${match(buffer) || "no such value"}` : "";
  }
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || response.statusText);
    return answer;
  }
  async function recount() {
    const response = await fetch(`/api/review/count?${query}`, { credentials: "same-origin" });
    if (response.ok) remaining.textContent = (await response.json()).shown;
  }
  function show(answer) {
    for (const cell of cells) {
      const label = answer.labels[cell.dataset.imageId];
      if (answer.labels.hasOwnProperty(cell.dataset.imageId)) {
        cell.dataset.labelId = label && label.label_id ? label.label_id : 0;
        cell.querySelector(".label").textContent = (label && label.value) || "—";
      }
    }
  }
  async function label(pairs) {
    if (!canLabel) { say("viewers see; a moderator labels"); return; }
    if (!pairs.length) return;
    try {
      const answer = await post("/api/labels", {
        attribute,
        labels: pairs.map(([cell, value]) => ({
          image_id: Number(cell.dataset.imageId), value,
          expected_label_id: Number(cell.dataset.labelId || 0),
        })),
      });
      show(answer);
      for (const [cell] of pairs) { cell.classList.add("done"); cell.classList.remove("selected", "stale"); }
      for (const s of answer.stale) {
        const cell = cells.find((c) => Number(c.dataset.imageId) === s.image_id);
        if (cell) { cell.classList.remove("done"); cell.classList.add("stale"); }
      }
      if (answer.written) undoStack.push(answer.job_id);
      say(answer.stale.length
        ? `${answer.written} set; ${answer.stale.length} not saved: changed by someone else since the page was drawn (` +
          answer.stale.map((s) => `now ${s.now || "cleared"} by ${s.by}`).join(", ") + "); set again to overwrite"
        : `${answer.written} set (job ${answer.job_id}); u undoes`);
      recount();
    } catch (error) { say(`not saved: ${error.message}`); }
  }
  async function undo() {
    const job = undoStack.pop();
    if (!job) { say("nothing to undo"); return; }
    try {
      const answer = await post(`/api/jobs/${job}/undo`);
      const ids = cells.map((c) => c.dataset.imageId);
      const refreshed = await post("/api/labels/latest", { attribute, image_ids: ids.map(Number) });
      show(refreshed);
      for (const cell of cells) if (!refreshed.labels[cell.dataset.imageId]) cell.classList.remove("done");
      say(`job ${job} undone by job ${answer.job_id}: ${answer.changed} put back` +
          (answer.skipped ? `, ${answer.skipped} changed since and left` : ""));
      recount();
    } catch (error) { say(`undo failed: ${error.message}`); }
  }

  const relabel = document.getElementById("relabel-selected");
  if (relabel) relabel.addEventListener("click", () => {
    const posts = targets().map((c) => "shortcode=" + encodeURIComponent(c.dataset.shortcode));
    window.location = `/relabel?kind=move&attribute=${encodeURIComponent(attribute)}&${posts.join("&")}`;
  });

  cells.forEach((cell, i) => {
    cell.addEventListener("click", (event) => {
      if (event.target.closest("a")) return;
      if (event.shiftKey) {
        const [a, b] = [Math.min(anchor, i), Math.max(anchor, i)];
        for (let k = a; k <= b; k++) cells[k].classList.add("selected");
      } else if (event.ctrlKey || event.metaKey) {
        cell.classList.toggle("selected"); anchor = i;
      } else {
        cells.forEach((c) => c.classList.remove("selected"));
        cell.classList.add("selected"); anchor = i;
      }
      moveTo(i);
    });
  });
  document.addEventListener("keydown", (event) => {
    if (event.target.closest("input, select, textarea, button") || event.ctrlKey || event.metaKey || event.altKey) return;
    const k = event.key;
    if (k === "ArrowRight") moveTo(cursor + 1);
    else if (k === "ArrowLeft") moveTo(cursor - 1);
    else if (k === "ArrowDown") moveTo(cursor + columns());
    else if (k === "ArrowUp") moveTo(cursor - columns());
    else if (k === " " && !buffer) { cells[cursor].classList.toggle("selected"); anchor = cursor; }
    else if (k === "Escape") { buffer = ""; showTyped(); cells.forEach((c) => c.classList.remove("selected")); }
    else if (k === "Backspace") { buffer = buffer.slice(0, -1); showTyped(); }
    else if (k === "Enter") {
      if (buffer) {
        const value = match(buffer);
        buffer = ""; showTyped();
        if (value) label(targets().map((c) => [c, value])); else say("no such value");
      } else {
        label(targets().filter((c) => c.dataset.suggestion).map((c) => [c, c.dataset.suggestion]));
      }
    } else if (k === "u" && !buffer) undo();
    else if (k.length === 1 && /[\p{L}\p{N} -]/u.test(k)) { buffer += k; showTyped(); }
    else return;
    event.preventDefault();
  });
})();
