// The supervisor wallboard: the board over a WebSocket, drawn with DOM APIs only.
//
// The first message is the whole board; later ones are deltas (the queues and agents that
// changed, with the keys of those gone), merged here into the board kept. The page redraws
// the tiles and updates the agent rows in place (an open pause form survives a push). Times in the snapshot
// are the server's epoch seconds; durations count up here every second from those times, so
// a wall screen needs no extra traffic to show waits growing. Names, reasons and queue names
// are set with textContent: hostile text never becomes markup.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("page-config").textContent);
  const boardEl = document.getElementById("wallboard");
  const queuesEl = document.getElementById("queues");
  const alertsEl = document.getElementById("alerts");
  const noAlertsEl = document.getElementById("no-alerts");
  const agentsEl = document.querySelector("#agents tbody");
  const noAgentsEl = document.getElementById("no-agents");
  const feedEl = document.getElementById("feed");
  const windowLabelEl = document.getElementById("window-label");
  const settingsEl = document.getElementById("settings");
  const linkEl = document.getElementById("link");
  const pauseTemplate = document.getElementById("pause-template");
  const rateTemplate = document.getElementById("rate-template");
  const memberTemplate = document.getElementById("member-template");

  const SVG = "http://www.w3.org/2000/svg";
  const WINDOWS = ["15m", "1h", "today"];
  const LEVELS = new Set(["ok", "warn", "alert"]);
  const STATES = {
    on_call: "on call",
    ringing: "ringing",
    wrap_up: "wrap-up",
    paused: "paused",
    available: "available",
    logged_out: "logged out",
  };
  const TIERS = { vip: "VIP", regular: "regular", low: "low" }; // the caller's value tier
  // what each way of joining an agent's call is called, and what the row says once it worked
  const SPY = {
    listen: { text: "Listen", label: (name) => `Listen to ${name}`, done: "Listening ✓" },
    whisper: { text: "Whisper", label: (name) => `Whisper to ${name}`, done: "Whispering ✓" },
    barge: { text: "Barge", label: (name) => `Barge in on ${name}'s call`, done: "Barging in ✓" },
  };
  const FADE_AFTER_MS = 4000; // a "done" message goes after this; an error stays
  const FADE_MS = 600; // the fade's length (wallboard.css); none under reduced motion
  const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
  const MAX_BACKOFF_MS = 15000;
  const DEAD_AFTER_MS = config.idle * 3000; // three idle pushes missed: the link is dead
  const TREND_SECONDS = 3600;

  let board = null;
  let windowKey = WINDOWS.includes(location.hash.slice(1)) ? location.hash.slice(1) : "15m";
  let clockOffset = 0; // server clock minus this browser's, in seconds
  let socket = null;
  let attempts = 0;
  let reconnectTimer = null;
  let lastHeard = Date.now();
  const rows = new Map(); // "pbx/id" -> {row, cells, controls}

  // ------------------------------------------------------------------ the link

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/wallboard`);
    socket = ws;
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      lastHeard = Date.now();
      attempts = 0;
      const msg = JSON.parse(event.data);
      if (msg.type === "board") show(msg.board);
      else if (msg.type === "delta" && board !== null) show(merge(board, msg.delta));
    };
    ws.onclose = (event) => {
      if (ws !== socket) return;
      socket = null;
      lost(event.code);
    };
  }

  function lost(code) {
    setLink(false);
    if (code === 4401) {
      location.assign("/login?next=%2Fwallboard");
      return;
    }
    // a refused handshake looks like any other drop: ask whether the session is still there
    fetch("/api/me", { credentials: "same-origin" })
      .then((res) => {
        if (res.status === 401) location.assign("/login?next=%2Fwallboard");
        else scheduleReconnect();
      })
      .catch(scheduleReconnect);
  }

  function scheduleReconnect() {
    if (reconnectTimer !== null) return;
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempts);
    attempts += 1;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = null;
      connect();
    }, base * (1 + Math.random() * 0.3));
  }

  function reconnectNow() {
    if (socket !== null) return;
    if (reconnectTimer !== null) clearTimeout(reconnectTimer);
    reconnectTimer = null;
    connect();
  }

  function dropDeadLink() {
    if (socket === null || Date.now() - lastHeard < DEAD_AFTER_MS) return;
    const dead = socket;
    socket = null; // its close event, whenever it comes, is ignored
    dead.close();
    lost(1006);
  }

  function setLink(live) {
    linkEl.className = `link ${live ? "live" : "down"}`;
    linkEl.textContent = live ? "live" : "reconnecting…";
    boardEl.classList.toggle("stale", !live); // old numbers must not look current
  }

  // ------------------------------------------------------------------ the board

  // A delta's queues and agents replace those with the same key; the rest stay as they were.
  function merge(old, delta) {
    // keys sort as the server sorts: queues by PBX then name, agents by id then PBX
    const queueKey = (pbx, name) => `${pbx}\u0000${name}`;
    const agentKey = (pbx, id) => `${id}\u0000${pbx}`;
    return {
      ...old,
      ...delta,
      queues: mergeList(old.queues, delta.queues, delta.gone.queues, (q) => queueKey(q.pbx, q.name), queueKey),
      agents: mergeList(old.agents, delta.agents, delta.gone.agents, (a) => agentKey(a.pbx, a.id), agentKey),
    };
  }

  function mergeList(old, changed, gone, keyOf, goneKey) {
    const byKey = new Map(old.map((item) => [keyOf(item), item]));
    for (const [pbx, name] of gone) byKey.delete(goneKey(pbx, name));
    for (const item of changed) byKey.set(keyOf(item), item);
    return [...byKey.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, item]) => item);
  }

  function show(snapshot) {
    board = snapshot;
    clockOffset = snapshot.at - Date.now() / 1000;
    setLink(true);
    render();
  }

  function render() {
    if (board === null) return;
    renderBar();
    queuesEl.replaceChildren(tile(board.total, true), ...board.queues.map((q) => tile(q, false)));
    renderAlerts();
    renderAgents();
    const w = board.settings.weights;
    settingsEl.textContent =
      `Short-abandon threshold ${board.settings.short_abandon} s. Score weights: availability ${w.availability},` +
      ` customer rating ${w.customer_rating}, supervisor rating ${w.supervisor_rating}, resolution ${w.resolution}.`;
  }

  function renderBar() {
    for (const button of document.querySelectorAll("[data-window]")) {
      button.setAttribute("aria-pressed", String(button.dataset.window === windowKey));
    }
    const w = board.windows.find((item) => item.key === windowKey);
    windowLabelEl.textContent = w ? `${w.label} · since ${clock(w.since)}` : "";
    feedEl.replaceChildren(
      ...board.feed.map((f) => {
        const item = el("span", `pbx-link ${f.connected ? "up" : "down"}`);
        item.append(el("span", "dot"), document.createTextNode(`AMI ${f.pbx} `));
        if (f.connected) {
          item.append(document.createTextNode(`connected since ${clock(f.since)}`));
        } else {
          item.append(document.createTextNode(`disconnected since ${clock(f.since)} (`), since(f.since), document.createTextNode(")"));
          if (f.reason) item.append(el("span", "pbx-reason", `: ${f.reason}`));
        }
        return item;
      }),
    );
  }

  function tile(q, total) {
    const f = q.figures[windowKey];
    const level = LEVELS.has(q.level) ? q.level : "ok";
    const root = el("article", `tile level-${level}${total ? " total" : ""}`);
    root.dataset.queue = total ? "total" : `${q.pbx}/${q.name}`;
    const head = el("header", "tile-head");
    head.append(el("h3", "name", q.name));
    if (q.pbx) head.append(el("span", "pbx", q.pbx));
    head.append(el("span", `level-badge ${level}`, level === "ok" ? "OK" : level === "warn" ? "warning" : "ALERT"));
    root.append(head);

    // a queue left out of a delta keeps its oldest caller's time: the wait counts up from it
    const oldest = q.oldest_since ?? (q.longest_wait !== null ? board.at - q.longest_wait : null);
    const longest = q.waiting > 0 && oldest !== null ? since(oldest) : "–";
    root.append(
      stats("big", [
        // callers of the VIP tier among them (the pop's lookup told the board)
        stat("waiting", q.vip_waiting ? `waiting · ${q.vip_waiting} VIP` : "waiting", q.waiting),
        stat("longest", "longest wait", longest),
        // all queues: each call against its own queue's threshold (one, if they all agree)
        stat("sl", typeof f.sl_threshold === "number" ? `SL (${f.sl_threshold} s)` : "SL (per queue)", pct(f.service_level)),
        stat("abandoned", `abandoned ${pct(f.abandon_rate)}`, f.abandoned),
      ]),
      stats("people", [
        stat("available", "available", q.agents.available),
        stat("on-call", "on call", q.agents.on_call),
        stat("wrap-up", "wrap-up", q.agents.wrap_up),
        stat("paused", "paused", q.agents.paused),
      ]),
      stats("small", [
        stat("asa", "ASA", duration(f.asa)),
        stat("aht", "AHT", duration(f.aht)),
        stat("callbacks", q.callbacks_overdue ? `callbacks · ${q.callbacks_overdue} overdue` : "callbacks", q.callbacks),
        stat("offered", "offered", f.offered),
        stat("answered", "answered", f.answered),
        stat("short", "short abandons", f.short_abandoned),
        stat("other", "other exits", f.other_exits),
        stat("logged-in", "logged in", q.agents.logged_in), // all queues: each agent once
      ]),
    );
    const reasons = Object.entries(q.paused_reasons || {});
    if (reasons.length) {
      root.append(el("p", "reasons", `paused: ${reasons.map(([reason, n]) => `${reason} ${n}`).join(", ")}`));
    }
    if (!total) root.append(trend(q.trend));
    if (f.gaps.length) root.append(el("p", "gap-notice", `no data ${f.gaps.map(gapText).join(", ")}`));
    return root;
  }

  function stats(kind, items) {
    const box = el("div", `stats ${kind}`);
    box.append(...items);
    return box;
  }

  function stat(key, label, value) {
    const box = el("div", `stat stat-${key}`);
    const shown = el("span", "value");
    if (value instanceof Node) shown.append(value);
    else shown.textContent = value === null || value === undefined ? "–" : String(value);
    box.append(shown, el("span", "label", label));
    return box;
  }

  function gapText([start, end]) {
    return end === null ? `since ${clock(start)}` : `${clock(start)}–${clock(end)}`;
  }

  // Waiting callers and service level over the last hour; a null point (no data: AMI was
  // down) ends a line and shades its minute, so a gap is drawn as a gap, never as zero.
  function trend(points) {
    const width = 240;
    const height = 64;
    const pad = 4;
    const start = board.at - TREND_SECONDS;
    const step = width / 60;
    const x = (at) => ((at - start) / TREND_SECONDS) * width;
    const peak = Math.max(1, ...points.map((p) => p.waiting ?? 0));
    const scaled = (value, top) => height - pad - (value / top) * (height - 2 * pad);
    const svg = svgEl("svg", { class: "trend", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
    svg.append(svgEl("title", {}, `Waiting (peak ${peak}) and service level over the last hour`));
    for (const p of points) {
      if (p.waiting === null && p.service_level === null) {
        svg.append(svgEl("rect", { class: "gap", x: x(p.at) - step / 2, y: 0, width: step, height }));
      }
    }
    for (const [key, top] of [["service_level", 100], ["waiting", peak]]) {
      for (const run of runs(points, key)) {
        const d = run.map((p, i) => `${i ? "L" : "M"}${x(p.at).toFixed(1)} ${scaled(p[key], top).toFixed(1)}`).join(" ");
        // a lone point still shows: a zero-length line with round caps is a dot
        svg.append(svgEl("path", { class: `line ${key === "waiting" ? "waiting" : "sl"}`, d: run.length > 1 ? d : `${d} l0 0` }));
      }
    }
    const box = el("figure", "trend-box");
    const caption = el("figcaption", "legend");
    caption.append(el("span", "key waiting", `waiting (peak ${peak})`), el("span", "key sl", "service level %"), el("span", "span", "last hour"));
    box.append(svg, caption);
    return box;
  }

  function runs(points, key) {
    const found = [];
    let current = [];
    for (const p of points) {
      if (p[key] === null || p[key] === undefined) {
        if (current.length) found.push(current);
        current = [];
      } else {
        current.push(p);
      }
    }
    if (current.length) found.push(current);
    return found;
  }

  function renderAlerts() {
    alertsEl.replaceChildren(
      ...board.alerts.map((a) => {
        const item = el("li", "alert");
        item.dataset.kind = a.kind;
        const head = el("p", "alert-head");
        head.append(el("time", "started", clock(a.since)), el("span", "where", a.pbx ? `${a.queue} · ${a.pbx}` : a.queue));
        const age = el("span", "age");
        age.append(document.createTextNode("for "), since(a.since));
        head.append(age);
        item.append(head, el("p", "text", a.text));
        return item;
      }),
    );
    noAlertsEl.hidden = board.alerts.length > 0;
  }

  // ------------------------------------------------------------------ agents

  function renderAgents() {
    const seen = new Set();
    board.agents.forEach((agent, index) => {
      const key = `${agent.pbx}/${agent.id}`;
      seen.add(key);
      let entry = rows.get(key);
      if (!entry) {
        entry = newRow(agent);
        rows.set(key, entry);
      }
      entry.agent = agent;
      fillRow(entry);
      const at = agentsEl.children[index];
      if (at !== entry.row) agentsEl.insertBefore(entry.row, at || null); // moves only when the order changed
    });
    for (const [key, entry] of rows) {
      if (!seen.has(key)) {
        entry.row.remove();
        rows.delete(key);
      }
    }
    noAgentsEl.hidden = board.agents.length > 0;
  }

  const COLUMNS = ["agent", "state", "in-state", "reason", "call", "queue", "call-time", "handled", "aht", "fcr", "csat", "rating", "score", "followups"];
  const NUMERIC = new Set(["handled", "aht", "fcr", "csat", "rating", "score", "followups"]);

  function newRow(agent) {
    const row = el("tr");
    row.dataset.agent = `${agent.pbx}/${agent.id}`;
    const cells = {};
    for (const name of COLUMNS) {
      cells[name] = el("td", `col-${name}${NUMERIC.has(name) ? " num" : ""}`);
      row.append(cells[name]);
    }
    const entry = { row, cells, agent };
    row.append(controls(entry));
    return entry;
  }

  function fillRow(entry) {
    const { agent, cells } = entry;
    const state = agent.state in STATES ? agent.state : "logged_out";
    entry.row.className = `state-${state}`;
    const who = el("span", "agent-name", agent.name);
    const detail = el("small", "agent-detail", [agent.id, agent.queues.join(", ")].filter(Boolean).join(" · "));
    cells.agent.replaceChildren(who, detail);
    cells.state.replaceChildren(el("span", `state-badge ${state}`, STATES[state]));
    // released at the longest wrap-up with the outcome still owed: the supervisor follows up
    const missing = agent.outcomes_missing || 0;
    if (missing > 0) {
      cells.state.append(el("small", "outcomes-missing", `${missing} outcome${missing === 1 ? "" : "s"} missing`));
    }
    cells["in-state"].replaceChildren(since(agent.since));
    cells.reason.textContent = agent.reason || "";
    const call = agent.call;
    if (call) {
      const caller = el("span", "customer", call.customer || call.caller || "unknown caller");
      cells.call.replaceChildren(caller);
      if (Object.hasOwn(TIERS, call.tier ?? "")) cells.call.append(el("span", `tier-badge tier-${call.tier}`, TIERS[call.tier]));
      if (call.customer && call.caller) cells.call.append(el("small", "caller", call.caller));
      cells.queue.textContent = call.queue || "direct";
      cells["call-time"].replaceChildren(since(call.since));
    } else {
      cells.call.replaceChildren();
      cells.queue.textContent = "";
      cells["call-time"].replaceChildren();
    }
    cells.handled.textContent = String(agent.handled_today);
    cells.aht.textContent = duration(agent.aht_today);
    cells.fcr.textContent = agent.fcr === null ? "–" : pct(agent.fcr * 100);
    cells.csat.textContent = decimal(agent.csat);
    cells.rating.textContent = decimal(agent.supervisor_rating);
    cells.score.textContent = agent.score === null ? "–" : String(Math.round(agent.score));
    // the agent's own follow-ups to do, and how many are past due
    const late = agent.followups_overdue || 0;
    cells.followups.textContent = agent.followups === undefined ? "–" : `${agent.followups}${late ? ` (${late} overdue)` : ""}`;
    cells.followups.classList.toggle("late", late > 0);
    // paused for wrap-up (the service holds an agent who owes an outcome): whatever the state
    // (wrap-up, or a call taken meanwhile), a supervisor may release the agent
    const held = agent.wrapup_paused === true;
    const paused = state === "paused" && !held;
    entry.pause.hidden = paused || held || state === "logged_out" || !entry.form.hidden;
    entry.unpause.hidden = !paused;
    entry.release.hidden = !held;
    // the supervisor's own phone is rung into the call: without one, nothing to offer
    entry.spyGroup.hidden = !(config.phone && call && state === "on_call");
    nameButtons(entry);
    if (paused || held || state === "logged_out") entry.form.hidden = true;
  }

  function controls(entry) {
    const cell = el("td", "col-control");
    const pause = button("Pause", "pause");
    const unpause = button("Unpause", "unpause");
    const release = button("Release wrap-up", "release");
    const spies = Object.entries(SPY).map(([mode, spy]) => {
      const node = button(spy.text, `spy ${mode}`);
      node.dataset.mode = mode;
      return node;
    });
    const rate = button("Rate", "rate");
    const queues = button("Queues", "queues");
    const membership = memberTemplate.content.firstElementChild.cloneNode(true);
    const form = pauseTemplate.content.firstElementChild.cloneNode(true);
    const rating = rateTemplate.content.firstElementChild.cloneNode(true);
    const status = el("span", "control-status", "");
    status.setAttribute("role", "status");
    const spyGroup = el("span", "spy-group");
    spyGroup.setAttribute("role", "group");
    spyGroup.hidden = true;
    spyGroup.append(...spies);
    Object.assign(entry, { pause, unpause, release, spies, spyGroup, queues, rate, form, status, fadeTimer: null });
    queues.addEventListener("click", () => {
      membership.hidden = !membership.hidden;
      if (membership.hidden) return;
      // every queue of the agent's PBX, the agent's own first
      const { pbx, queues: own } = entry.agent;
      const names = board.queues.filter((q) => q.pbx === pbx).map((q) => q.name);
      const ordered = [...own, ...names.filter((n) => !own.includes(n))];
      membership.elements.queue.replaceChildren(
        ...ordered.map((name) => {
          const option = el("option", "", own.includes(name) ? `${name} (member)` : name);
          option.value = name;
          return option;
        }),
      );
      membership.elements.queue.focus();
    });
    membership.querySelector(".cancel").addEventListener("click", () => {
      membership.hidden = true;
    });
    membership.addEventListener("submit", async (event) => {
      event.preventDefault();
      const queue = membership.elements.queue.value;
      if (!queue) return;
      const { id, pbx } = entry.agent;
      const base = `/api/queues/${encodeURIComponent(queue)}/members`;
      const done =
        event.submitter && event.submitter.value === "remove"
          ? await command(entry, `${base}/${encodeURIComponent(id)}?pbx=${encodeURIComponent(pbx)}`, null, `Logged out of ${queue} ✓`, "DELETE")
          : await command(entry, base, { agent: id, pbx }, `Logged in to ${queue} ✓`);
      if (done) membership.hidden = true;
    });
    rate.addEventListener("click", () => {
      rating.hidden = !rating.hidden;
      if (!rating.hidden) rating.elements.score.focus();
    });
    rating.querySelector(".cancel").addEventListener("click", () => {
      rating.hidden = true;
      rating.reset();
    });
    rating.addEventListener("submit", async (event) => {
      event.preventDefault();
      const url = `/api/agents/${encodeURIComponent(entry.agent.id)}/ratings`;
      const body = { score: Number(rating.elements.score.value), note: rating.elements.note.value.trim() };
      if (await command(entry, url, body, "Rated ✓")) {
        rating.hidden = true;
        rating.reset();
      }
    });
    pause.addEventListener("click", () => {
      form.hidden = false;
      pause.hidden = true;
      form.elements.reason.focus();
    });
    form.querySelector(".cancel").addEventListener("click", () => closeForm(entry));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const reason = form.elements.reason.value.trim();
      if (await setPaused(entry, true, reason)) closeForm(entry);
    });
    unpause.addEventListener("click", () => setPaused(entry, false, ""));
    // the same control as Unpause (and audited alike); the outcome stays owed on the agent's card
    release.addEventListener("click", () => setPaused(entry, false, "", "Released from wrap-up ✓"));
    for (const spy of spies) {
      spy.addEventListener("click", () => {
        const call = entry.agent.call;
        if (!call) return;
        const { mode } = spy.dataset;
        const url = `/api/calls/${encodeURIComponent(call.pbx)}/${encodeURIComponent(call.call_id)}/listen`;
        command(entry, url, { mode }, SPY[mode].done, "POST", "Ringing your phone…");
      });
    }
    const bar = el("div", "control-bar");
    bar.append(spyGroup, pause, unpause, release, queues, rate);
    cell.append(bar, form, membership, rating, status);
    return cell;
  }

  // each button names the agent it acts on (a screen reader's list of buttons says whose)
  function nameButtons(entry) {
    const name = entry.agent.name || entry.agent.id;
    const labels = [
      [entry.pause, `Pause ${name}`],
      [entry.unpause, `Unpause ${name}`],
      [entry.release, `Release wrap-up for ${name}`],
      [entry.queues, `Queues of ${name}`],
      [entry.rate, `Rate ${name}`],
      [entry.spyGroup, `${name}'s call`],
      ...entry.spies.map((spy) => [spy, SPY[spy.dataset.mode].label(name)]),
    ];
    for (const [node, label] of labels) {
      if (node.getAttribute("aria-label") !== label) node.setAttribute("aria-label", label);
    }
  }

  function closeForm(entry) {
    entry.form.hidden = true;
    entry.form.reset();
    fillRow(entry);
  }

  function setPaused(entry, paused, reason, done = paused ? "Paused ✓" : "Unpaused ✓") {
    const url = `/api/agents/${encodeURIComponent(entry.agent.id)}/pause`;
    return command(entry, url, { paused, reason }, done);
  }

  async function command(entry, url, body, done, method = "POST", pending = "…") {
    say(entry, "pending", pending);
    let res = null;
    try {
      res = await fetch(url, {
        method,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf },
        body: body === null ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      res = null;
    }
    if (res !== null && res.ok) {
      say(entry, "ok", done); // the next push shows the new state
      return true;
    }
    if (res !== null && res.status === 401) {
      location.assign("/login?next=%2Fwallboard");
      return false;
    }
    let message = res === null ? "No connection." : `Failed (${res.status}).`;
    try {
      const data = await res.json();
      if (data.message) message = data.message;
    } catch (e) {
      // keep the generic message
    }
    say(entry, "error", message);
    return false;
  }

  // A row's status line: "done" fades after a few seconds, an error stays until the next
  // action; whatever is said replaces what was (and its pending fade).
  function say(entry, kind, text) {
    clearTimeout(entry.fadeTimer);
    entry.fadeTimer = kind === "ok" ? setTimeout(() => fade(entry), FADE_AFTER_MS) : null;
    entry.status.className = `control-status ${kind}`;
    entry.status.textContent = text;
  }

  function fade(entry) {
    if (reducedMotion.matches) {
      silence(entry);
      return;
    }
    entry.status.classList.add("fading");
    entry.fadeTimer = setTimeout(() => silence(entry), FADE_MS);
  }

  function silence(entry) {
    entry.fadeTimer = null;
    entry.status.className = "control-status";
    entry.status.textContent = "";
  }

  // ------------------------------------------------------------------ helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function button(text, className) {
    const node = el("button", className, text);
    node.type = "button";
    return node;
  }

  // a duration that counts up every second from a server time
  function since(epochSeconds) {
    const node = el("span", "since", duration(serverNow() - epochSeconds));
    node.dataset.since = String(epochSeconds);
    return node;
  }

  function serverNow() {
    return Date.now() / 1000 + clockOffset;
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
  }

  function pct(value) {
    return value === null || value === undefined ? "–" : `${Math.round(value)}%`;
  }

  function decimal(value) {
    return value === null || value === undefined ? "–" : value.toFixed(1);
  }

  function clock(epochSeconds) {
    const at = new Date(epochSeconds * 1000);
    return `${String(at.getHours()).padStart(2, "0")}:${String(at.getMinutes()).padStart(2, "0")}`;
  }

  function tick() {
    for (const node of boardEl.querySelectorAll("[data-since]")) {
      node.textContent = duration(serverNow() - Number(node.dataset.since));
    }
    dropDeadLink();
  }

  for (const choice of document.querySelectorAll("[data-window]")) {
    choice.addEventListener("click", () => {
      windowKey = choice.dataset.window;
      history.replaceState(null, "", `#${windowKey}`); // a wall screen's bookmark keeps it
      render();
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) reconnectNow();
  });
  window.addEventListener("online", reconnectNow);
  connect();
})();
