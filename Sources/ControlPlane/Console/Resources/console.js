// Tailplane console: live updates from the server's event stream, the policy editor, and buttons that call
// the /v1 API. No framework and no build step; the server renders every page and fragment, this only asks
// for them again and places them. Text from the server is set with textContent, never parsed as HTML,
// except the fragments, which the server renders with every value escaped.
"use strict";

(function () {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
  const statusBox = document.getElementById("status");

  function say(text, tone) {
    if (!statusBox) return;
    statusBox.textContent = text;
    statusBox.className = "status" + (tone ? " " + tone : "");
  }

  async function call(method, url, body) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: Object.assign(
        { "X-CSRF-Token": csrf, Accept: "application/json" },
        body === undefined ? {} : { "Content-Type": "application/json" }
      ),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json = null;
    try {
      json = await response.json();
    } catch (_) {
      json = null;
    }
    return { status: response.status, json };
  }

  function errorText(answer) {
    const error = answer.json && answer.json.error;
    if (answer.status === 401) return "Your session has ended: reload the page to sign in again.";
    return error ? error.message : "The server answered " + answer.status + ".";
  }

  // Buttons that call the API: data-post (URL), data-body (JSON), data-confirm, data-then.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-post]");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      const body = button.dataset.body ? JSON.parse(button.dataset.body) : undefined;
      const answer = await call("POST", button.dataset.post, body);
      if (answer.status >= 200 && answer.status < 300) {
        if (button.dataset.then === "rollout" && answer.json && answer.json.rollout) {
          window.location.assign("/rollout/" + answer.json.rollout);
          return;
        }
        say("Done.", "good");
        refreshAll();
      } else {
        say(errorText(answer), "bad");
      }
    } catch (error) {
      say("The request failed: " + error, "bad");
    } finally {
      button.disabled = false;
    }
  });

  // Live regions: [data-live] holds the URL of a fragment the server renders; each event from /v1/events
  // (Server-Sent Events) asks for it again. A page with [data-watch-rollouts] (the rollout page) moves to a
  // rollout that starts while it is open.
  const live = Array.from(document.querySelectorAll("[data-live]"));
  const watcher = document.querySelector("[data-watch-rollouts]");
  let pending = null;
  let source = null;
  let slowRefresh = null;

  function stopWhenIdle() {
    if (watcher || live.some((region) => region.dataset.live)) return;
    if (source) source.close();
    clearInterval(slowRefresh);
  }

  async function refresh(region) {
    const url = region.dataset.live;
    if (!url) return;
    try {
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (response.status === 401) {
        say("Your session has ended: reload the page to sign in again.", "bad");
        return;
      }
      const html = await response.text();
      if (response.ok) {
        region.innerHTML = html;
        // A rollout that has ended stops changing.
        const rollout = region.querySelector("[data-phase]");
        if (rollout && ["succeeded", "rolled back", "aborted", "superseded", "failed"].includes(rollout.dataset.phase)) {
          delete region.dataset.live;
          stopWhenIdle();
        }
      }
    } catch (_) {
      // The next event or the periodic refresh tries again.
    }
  }

  function refreshAll() {
    live.forEach(refresh);
  }

  function schedule() {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      refreshAll();
    }, 500);
  }

  if ((live.length > 0 || watcher) && "EventSource" in window) {
    const after = (live[0] || watcher).dataset.eventsAfter || "0";
    source = new EventSource("/v1/events?after=" + encodeURIComponent(after));
    const kinds = [
      "rollout_started", "stage_started", "agent_step", "stage_passed", "rollout_failed", "rollout_ended",
      "rollout_paused", "rollout_resumed", "ring_changed", "ring_converged",
    ];
    kinds.forEach((kind) =>
      source.addEventListener(kind, (event) => {
        if (kind === "rollout_started" && watcher) {
          const started = JSON.parse(event.data).rollout;
          if (started && !document.querySelector('[data-rollout="' + started + '"]')) {
            window.location.assign("/rollout/" + started);
            return;
          }
        }
        schedule();
      })
    );
    source.onmessage = schedule;
    // Agents' own reports (health, convergence) are not rollout events: a slow refresh covers them.
    if (live.length > 0) slowRefresh = setInterval(schedule, 5000);
  }

  // The policy editor.
  const editor = document.getElementById("policy-editor");
  if (editor) setUpEditor(editor);

  function setUpEditor(root) {
    const source = document.getElementById("source");
    const gutter = document.getElementById("gutter");
    const cursor = document.getElementById("cursor");
    const list = document.getElementById("diagnostics");
    const count = document.getElementById("diagnostic-count");
    const tabs = document.getElementById("file-tabs");
    const files = new Map();
    root.querySelectorAll("textarea[data-source]").forEach((area) => files.set(area.dataset.source, area.value));
    let current = tabs.querySelector('[aria-selected="true"]')?.dataset.file ?? files.keys().next().value;
    let marks = new Map(); // line -> {severity, message} for the current file
    let lastReport = { diagnostics: [], fleetDiagnostics: [] };
    let timer = null;
    let sequence = 0;

    function policySources() {
      return Array.from(files.entries())
        .filter(([path]) => path !== "fleet.yaml")
        .map(([path, text]) => ({ path, text }));
    }

    function select(path) {
      files.set(current, source.value);
      current = path;
      source.value = files.get(path) ?? "";
      tabs.querySelectorAll("[role=tab]").forEach((tab) => {
        tab.setAttribute("aria-selected", String(tab.dataset.file === path));
        tab.tabIndex = tab.dataset.file === path ? 0 : -1;
      });
      source.scrollTop = 0;
      showDiagnostics(lastReport);
      drawGutter();
      where();
    }

    function drawGutter() {
      const lines = source.value.split("\n").length;
      gutter.textContent = "";
      for (let line = 1; line <= lines; line++) {
        const span = document.createElement("span");
        span.textContent = String(line);
        const mark = marks.get(line);
        if (mark) {
          span.className = mark.severity === "error" ? "err" : "warn";
          span.title = mark.message;
        }
        gutter.appendChild(span);
        gutter.appendChild(document.createTextNode("\n"));
      }
      gutter.scrollTop = source.scrollTop;
    }

    // The policy compiler counts columns in UTF-8 bytes, the YAML parser behind fleet.yaml in characters;
    // the textarea counts UTF-16 units.
    function offsetOf(text, line, column, inCharacters) {
      const lines = text.split("\n");
      let offset = 0;
      for (let index = 0; index < Math.min(line - 1, lines.length); index++) offset += lines[index].length + 1;
      const here = lines[line - 1] ?? "";
      let bytes = 1;
      let units = 0;
      for (const character of here) {
        if (bytes >= column) break;
        bytes += inCharacters ? 1 : new TextEncoder().encode(character).length;
        units += character.length;
      }
      return offset + units;
    }

    function where() {
      const before = source.value.slice(0, source.selectionStart).split("\n");
      cursor.textContent = current + ": line " + before.length + ", column " + (new TextEncoder().encode(before[before.length - 1]).length + 1);
    }

    function jump(file, line, column) {
      if (!files.has(file)) return;
      if (file !== current) select(file);
      const offset = offsetOf(source.value, line, column, file === "fleet.yaml");
      source.focus();
      source.setSelectionRange(offset, offset);
      const lineHeight = parseFloat(getComputedStyle(source).lineHeight) || 18;
      source.scrollTop = Math.max(0, (line - 5) * lineHeight);
      where();
    }

    function normalise(report) {
      const items = [];
      (report.diagnostics || []).forEach((d) =>
        items.push({
          file: d.file, line: d.start.line, column: d.start.column, severity: d.severity, code: d.code,
          message: d.message, fix: d.suggestion,
        })
      );
      (report.fleetDiagnostics || []).forEach((d) =>
        items.push({
          file: d.file || "fleet.yaml", line: d.line || 1, column: d.column || 1, severity: d.severity || "error",
          code: d.code, message: d.message, fix: d.suggestion,
        })
      );
      return items;
    }

    function showDiagnostics(report) {
      const items = normalise(report);
      list.textContent = "";
      marks = new Map();
      const withErrors = new Set();
      items.forEach((item) => {
        if (item.severity === "error") withErrors.add(item.file);
        if (item.file === current && !(marks.get(item.line)?.severity === "error")) {
          marks.set(item.line, { severity: item.severity, message: item.code + ": " + item.message });
        }
        const li = document.createElement("li");
        li.className = item.severity;
        const link = document.createElement("button");
        link.type = "button";
        link.className = "link where";
        link.textContent = item.file + ":" + item.line + ":" + item.column;
        link.addEventListener("click", () => jump(item.file, item.line, item.column));
        const text = document.createElement("div");
        text.textContent = item.severity + " " + item.code + ": " + item.message;
        li.append(link, text);
        if (item.fix) {
          const fix = document.createElement("div");
          fix.className = "fix";
          fix.textContent = "Fix: " + item.fix;
          li.append(fix);
        }
        list.append(li);
      });
      tabs.querySelectorAll("[role=tab]").forEach((tab) => tab.classList.toggle("has-error", withErrors.has(tab.dataset.file)));
      const errors = items.filter((item) => item.severity === "error").length;
      const warnings = items.length - errors;
      const plural = (n, word) => n + " " + word + (n === 1 ? "" : "s");
      count.textContent = errors === 0 && warnings === 0 ? "no problems" : plural(errors, "error") + ", " + plural(warnings, "warning");
      count.className = "pill " + (errors > 0 ? "bad" : warnings > 0 ? "busy" : "good");
      drawGutter();
    }

    function showRendered(report) {
      if (!report.valid) {
        // Nothing renders from sources with errors: say so rather than show the last good render as this one.
        document.querySelectorAll(".rendered").forEach((box) => {
          box.querySelector("[data-hash]").textContent = "not rendered: the sources have errors";
          box.querySelector("[data-yaml]").textContent = "";
        });
        return;
      }
      (report.rendered || []).forEach((config) => {
        const box = document.querySelector('.rendered[data-tier="' + config.tier + '"]');
        if (!box) return;
        box.querySelector("[data-yaml]").textContent = config.yaml;
        box.querySelector("[data-hash]").textContent = config.hash;
      });
    }

    async function validate() {
      files.set(current, source.value);
      const mine = ++sequence;
      count.textContent = "checking…";
      count.className = "pill quiet";
      try {
        const answer = await call("POST", "/v1/validate", { sources: policySources(), fleet: files.get("fleet.yaml") ?? "" });
        if (mine !== sequence) return; // a newer edit is being checked
        if (answer.status !== 200) {
          count.textContent = "not checked";
          count.className = "pill bad";
          say(errorText(answer), "bad");
          return;
        }
        lastReport = answer.json;
        showDiagnostics(lastReport);
        showRendered(lastReport);
      } catch (error) {
        count.textContent = "not checked";
        count.className = "pill bad";
        say("Cannot check the sources: " + error, "bad");
      }
    }

    source.addEventListener("input", () => {
      files.set(current, source.value);
      drawGutter();
      clearTimeout(timer);
      timer = setTimeout(validate, 300);
    });
    source.addEventListener("scroll", () => {
      gutter.scrollTop = source.scrollTop;
    });
    ["keyup", "click", "focus"].forEach((kind) => source.addEventListener(kind, where));
    source.addEventListener("keydown", (event) => {
      // Tab indents (the DSL is indented); Escape then Tab leaves the editor, for keyboard users.
      if (event.key === "Tab" && !event.shiftKey && !source.dataset.escaped && !source.readOnly) {
        event.preventDefault();
        source.setRangeText("    ", source.selectionStart, source.selectionEnd, "end");
        source.dispatchEvent(new Event("input"));
      }
      if (event.key === "Escape") source.dataset.escaped = "1";
      else if (event.key !== "Tab") delete source.dataset.escaped;
    });
    tabs.addEventListener("click", (event) => {
      const tab = event.target.closest("[role=tab]");
      if (tab) select(tab.dataset.file);
    });
    tabs.addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const all = Array.from(tabs.querySelectorAll("[role=tab]"));
      const index = all.findIndex((tab) => tab.dataset.file === current);
      const next = all[(index + (event.key === "ArrowRight" ? 1 : all.length - 1)) % all.length];
      select(next.dataset.file);
      next.focus();
    });
    document.getElementById("new-file")?.addEventListener("click", () => {
      const name = window.prompt("Name of the new file (ending in .policy):", "new.policy");
      if (!name) return;
      if (!/^[A-Za-z0-9._\/-]+\.policy$/.test(name) || files.has(name)) {
        say("A new file needs a name of its own ending in .policy.", "bad");
        return;
      }
      files.set(name, "");
      const tab = document.createElement("button");
      tab.type = "button";
      tab.setAttribute("role", "tab");
      tab.className = "tab";
      tab.dataset.file = name;
      tab.setAttribute("aria-controls", "editor-panel");
      tab.textContent = name;
      tabs.insertBefore(tab, tabs.querySelector('[data-file="fleet.yaml"]'));
      select(name);
      source.focus();
    });

    const form = document.getElementById("apply-form");
    form?.addEventListener("submit", async (event) => {
      event.preventDefault();
      files.set(current, source.value);
      const button = document.getElementById("apply-button");
      button.disabled = true;
      say("Applying…");
      try {
        const answer = await call("POST", "/v1/apply", {
          sources: policySources(),
          fleet: files.get("fleet.yaml") ?? "",
          message: document.getElementById("apply-message").value,
          supersede: document.getElementById("apply-supersede").checked,
        });
        if (answer.status === 201) {
          say("Version " + answer.json.version + " stored; rollout " + answer.json.rollout + " started.", "good");
          window.location.assign("/rollout/" + answer.json.rollout);
        } else if (answer.status === 200) {
          say("Nothing to apply: the fleet already runs or is rolling out these sources (v" + answer.json.version + ").", "good");
        } else if (answer.status === 422) {
          lastReport = answer.json.error;
          showDiagnostics(lastReport);
          say("Not applied: the policy set has errors; nothing was stored.", "bad");
        } else {
          say("Not applied: " + errorText(answer), "bad");
        }
      } catch (error) {
        say("The request failed: " + error, "bad");
      } finally {
        button.disabled = false;
      }
    });

    // Estimate: the editor's sources and the current version over a trace sample the user picks.
    const estimateForm = document.getElementById("estimate-form");
    estimateForm?.addEventListener("submit", async (event) => {
      event.preventDefault();
      files.set(current, source.value);
      const file = document.getElementById("estimate-file").files[0];
      const result = document.getElementById("estimate-result");
      if (!file) return;
      const button = document.getElementById("estimate-button");
      button.disabled = true;
      result.textContent = "Estimating " + file.name + "…";
      try {
        const answer = await call("POST", "/v1/estimate", {
          sources: policySources(),
          fleet: files.get("fleet.yaml") ?? "",
          traces: await file.text(),
        });
        if (answer.status === 200) {
          showEstimate(result, answer.json, file.name);
        } else if (answer.status === 422) {
          result.textContent = "The sources have errors: fix them first (see Diagnostics).";
        } else {
          result.textContent = errorText(answer);
        }
      } catch (error) {
        result.textContent = "The request failed: " + error;
      } finally {
        button.disabled = false;
      }
    });

    function showEstimate(box, report, name) {
      const after = report.after;
      const before = report.before;
      const share = (part, whole) => (whole === 0 ? "0 %" : ((part * 100) / whole).toFixed(1) + " %");
      const line = (label, estimate) =>
        label + ": keeps " + estimate.keptTraces + " of " + estimate.traces + " traces (" + share(estimate.keptTraces, estimate.traces) +
        ") and " + estimate.keptSpans + " of " + estimate.spans + " spans (" + share(estimate.keptSpans, estimate.spans) + ")";
      box.textContent = "";
      const summary = document.createElement("p");
      summary.textContent = name + " — " + line("edited", after) + (before ? "; v" + report.currentVersion + " " + line("now", before).slice(5) : "") +
        (report.lateSpans > 0 ? "; " + report.lateSpans + " spans arrived after their trace was decided" : "");
      box.append(summary);
      const table = document.createElement("table");
      const head = table.createTHead().insertRow();
      ["Rule", "Action", "Traces now", "Spans now", "Traces edited", "Spans edited", "Change in traces"].forEach((title) => {
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = title;
        head.append(th);
      });
      const body = table.createTBody();
      const old = new Map((before ? before.rules : []).map((rule) => [rule.rule, rule]));
      const names = after.rules.map((rule) => rule.rule).concat((before ? before.rules : []).map((rule) => rule.rule).filter((n) => !after.rules.some((r) => r.rule === n)));
      const now = new Map(after.rules.map((rule) => [rule.rule, rule]));
      names.forEach((rule) => {
        const a = now.get(rule);
        const b = old.get(rule);
        const row = body.insertRow();
        const cells = [
          rule, (a || b).action,
          b ? b.decided : "–", b ? b.decidedSpans : "–",
          a ? a.decided : "removed", a ? a.decidedSpans : "–",
          a && b ? (a.decided - b.decided > 0 ? "+" : "") + (a.decided - b.decided) : a ? "new rule" : "removed",
        ];
        cells.forEach((value) => (row.insertCell().textContent = String(value)));
      });
      box.append(table);
    }

    source.value = files.get(current) ?? "";
    drawGutter();
    validate();
  }
})();
