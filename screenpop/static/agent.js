// The agent page: live cards over a WebSocket, the outcome form, the agent's own pause,
// their calls of the day ("My day", where a missing outcome is finished), and their
// follow-ups (dial a callback, close one).
//
// Cards are whole states with a version: a card is shown, updated or closed only by a version
// newer than the one already seen, so a duplicate or late message never pops a card twice.
// Messages carry the agent's sequence number; after a reconnect the page asks for what came
// after the last one it saw (or gets a snapshot). Everything is rendered with createElement
// and textContent: customer data is never parsed as HTML.
"use strict";

(() => {
  const config = JSON.parse(document.getElementById("page-config").textContent);
  // one date/time and money format per locale, shared with the server's pages (formats.js)
  const { when, day, time, clock, duration, money, number } = window.ctiFormats;
  const cardsEl = document.getElementById("cards");
  const emptyEl = document.getElementById("empty");
  const bannerEl = document.getElementById("wrapup-banner");
  const pbxBannerEl = document.getElementById("pbx-banner");
  const linkEl = document.getElementById("link");
  const formTemplate = document.getElementById("outcome-template");
  const ringBar = document.getElementById("ring-bar");
  const announcer = document.getElementById("announcer");
  const pageTitle = document.title;

  const FADE_MS = 2000;
  const MAX_BACKOFF_MS = 15000;
  const MAX_VERSIONS = 2000;
  const DEAD_AFTER_MS = config.ping_interval * 2500; // 2.5 ping intervals without a word

  const entries = new Map(); // card id -> {card, root, info, controls, form, chosen, key, retry, saving}
  const versions = new Map(); // card id -> newest version seen (kept after a card closed)
  let lastSeq = null;
  let epoch = null;
  let socket = null;
  let attempts = 0;
  let reconnectTimer = null;
  let lastHeard = Date.now();
  let clockOffset = 0; // server clock minus this browser's, in seconds

  // ------------------------------------------------------------------ the link

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = lastSeq === null ? "" : `?since=${lastSeq}&epoch=${encodeURIComponent(epoch)}`;
    const ws = new WebSocket(`${scheme}//${location.host}/ws${query}`);
    socket = ws;
    setLink("connecting", "connecting…");
    ws.onopen = () => {
      lastHeard = Date.now();
      setLink("live", "live");
    };
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      lastHeard = Date.now();
      attempts = 0;
      receive(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (ws !== socket) return;
      socket = null;
      lost(event.code);
    };
  }

  function lost(code) {
    setLink("down", "reconnecting…");
    if (code === 4401) {
      location.assign("/login?next=%2F");
      return;
    }
    // a refused handshake looks like any other drop: ask whether the session is still there
    fetch("/api/me", { credentials: "same-origin" })
      .then((res) => {
        if (res.status === 401) location.assign("/login?next=%2F");
        else scheduleReconnect(code === 4000);
      })
      .catch(() => scheduleReconnect(false));
  }

  function scheduleReconnect(now) {
    if (reconnectTimer !== null) return;
    const base = now ? 0 : Math.min(MAX_BACKOFF_MS, 500 * 2 ** attempts);
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

  function setLink(state, text) {
    linkEl.className = `link ${state}`;
    linkEl.textContent = text;
  }

  // ------------------------------------------------------------------ messages

  function receive(msg) {
    if (msg.type === "snapshot") {
      applySnapshot(msg);
    } else if (msg.type === "card") {
      if (lastSeq !== null && msg.seq <= lastSeq) return; // already applied
      lastSeq = msg.seq;
      applyCard(msg.card);
    } else if (msg.type === "pbx") {
      if (lastSeq !== null && msg.seq <= lastSeq) return; // already applied
      lastSeq = msg.seq;
      showPbxDown(msg.down);
    } else if (msg.type === "followups") {
      if (lastSeq !== null && msg.seq <= lastSeq) return; // already applied
      lastSeq = msg.seq;
      loadFollowups(); // one of the agent's follow-ups changed (in another tab, say)
    } else if (msg.type === "ping") {
      clockOffset = msg.now - Date.now() / 1000;
      if (lastSeq !== null && msg.seq > lastSeq && socket !== null) {
        socket.close(); // a gap: reconnect and fetch what is missing
      }
    }
    refreshPage();
  }

  // A phone system the service cannot reach: its calls do not pop here until it is back.
  function showPbxDown(down) {
    pbxBannerEl.hidden = down.length === 0;
    pbxBannerEl.textContent = down
      .map((pbx) => {
        const since = pbx.since ? ` since ${time(pbx.since)}` : "";
        const why = pbx.reason ? ` (${pbx.reason})` : "";
        return `Phone system ${pbx.name} unreachable${since}${why}: its calls do not pop here until it is back.`;
      })
      .join(" ");
  }

  function applySnapshot(msg) {
    if (msg.epoch !== epoch) versions.clear(); // another server run: versions start again
    epoch = msg.epoch;
    lastSeq = msg.seq;
    const current = new Set(msg.cards.map((card) => card.id));
    for (const [id, entry] of entries) {
      if (!current.has(id)) removeEntry(id, entry); // closed while we were away
    }
    for (const card of msg.cards) applyCard(card);
    showPbxDown(msg.pbx_down || []);
    loadFollowups(); // what changed while we were away
    loadDay();
    loadPause();
  }

  function applyCard(card) {
    if (card.version <= (versions.get(card.id) || 0)) return; // stale or duplicate
    versions.delete(card.id);
    versions.set(card.id, card.version);
    if (versions.size > MAX_VERSIONS) versions.delete(versions.keys().next().value);
    let entry = entries.get(card.id);
    if (card.state === "wrapup" || card.state === "closed") scheduleDay(); // My day changed
    if (card.state === "closed") {
      if (entry) closeEntry(card.id, entry);
      return;
    }
    if (card.state === "wrapup" && card.away) {
      // ended while no page of the agent was open: it waits in My day, not on the screen
      if (entry) removeEntry(card.id, entry);
      return;
    }
    const wasRinging = entry ? entry.card.state === "ringing" && !entry.fading : false;
    if (!entry) {
      entry = { card, root: el("article", "card"), info: null, form: null, chosen: null };
      entry.root.dataset.cardId = card.id;
      entry.root.tabIndex = -1; // "Show the card" moves focus here
      entries.set(card.id, entry);
      cardsEl.prepend(entry.root);
    }
    if (entry.fading) {
      clearTimeout(entry.fading);
      entry.fading = null;
      entry.root.classList.remove("closing");
    }
    entry.card = card;
    render(entry);
    if (card.state === "ringing" && !wasRinging) ringing(card);
  }

  // ------------------------------------------------------------------ a ring that is noticed

  function caller(card) {
    const lookup = card.lookup;
    if (lookup && lookup.cards && lookup.cards.length === 1) return lookup.cards[0].name;
    if (card.ivr && card.ivr.customer_name) return card.ivr.customer_name;
    return card.display_number || card.caller_name || "an unknown number";
  }

  // Once per ring: one polite announcement (the ticking wait time is not announced), and the
  // sound and desktop notification the agent switched on.
  function ringing(card) {
    const where = card.queue ? ` (queue ${card.queue})` : "";
    announcer.textContent = `Call from ${caller(card)} ringing${where}`;
    if (alertOn("ring-sound")) beep();
    if (alertOn("ring-notify") && document.hidden && "Notification" in window && Notification.permission === "granted") {
      const note = new Notification("Call ringing", { body: `${caller(card)}${where}`, tag: card.id });
      note.onclick = () => {
        window.focus();
        showCard(card.id);
      };
    }
  }

  function ringBarUpdate(open) {
    const rings = open.filter((e) => e.card.state === "ringing");
    ringBar.hidden = rings.length === 0;
    if (!rings.length) {
      document.title = pageTitle;
      return;
    }
    const latest = rings.map((e) => e.card).reduce((a, b) => ((b.ringing_at || 0) > (a.ringing_at || 0) ? b : a));
    const more = rings.length > 1 ? ` and ${rings.length - 1} more` : "";
    ringBar.querySelector(".ring-text").textContent = `Ringing: ${caller(latest)}${latest.queue ? ` · queue ${latest.queue}` : ""}${more}`;
    ringBar.dataset.ringCard = latest.id;
    document.title = `☎ ${caller(latest)} · ${pageTitle}`;
  }

  function showCard(id) {
    const entry = entries.get(id);
    if (!entry) return;
    entry.root.scrollIntoView({ block: "center", behavior: reducedMotion() ? "auto" : "smooth" });
    entry.root.focus({ preventScroll: true });
  }

  function reducedMotion() {
    return window.matchMedia("(prefers-reduced-motion: reduce)").matches;
  }

  function alertOn(name) {
    return localStorage.getItem(`cti.${name}`) === "on";
  }

  let audio = null;
  function beep() {
    try {
      audio = audio || new AudioContext();
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = 880;
      gain.gain.value = 0.1;
      tone.connect(gain).connect(audio.destination);
      tone.start();
      tone.stop(audio.currentTime + 0.25);
    } catch (e) {
      // no audio here: the bar and the title still show the ring
    }
  }

  function setUpAlerts() {
    ringBar.querySelector(".ring-show").addEventListener("click", () => showCard(ringBar.dataset.ringCard));
    for (const name of ["ring-sound", "ring-notify"]) {
      const box = document.querySelector(`input[name="${name}"]`);
      box.checked = alertOn(name);
      box.addEventListener("change", async () => {
        if (box.checked && name === "ring-notify" && "Notification" in window && Notification.permission === "default") {
          await Notification.requestPermission(); // asked once, when the agent asks for it
        }
        localStorage.setItem(`cti.${name}`, box.checked ? "on" : "off");
      });
    }
  }

  function closeEntry(id, entry) {
    entry.card = { ...entry.card, state: "closed" };
    entry.root.classList.add("closing");
    if (entry.retry) clearTimeout(entry.retry);
    entry.fading = setTimeout(() => removeEntry(id, entry), FADE_MS);
  }

  function removeEntry(id, entry) {
    if (entry.fading) clearTimeout(entry.fading);
    if (entry.retry) clearTimeout(entry.retry);
    entry.root.remove();
    entries.delete(id);
    refreshPage();
  }

  function refreshPage() {
    const open = [...entries.values()].filter((e) => e.card.state !== "closed");
    emptyEl.hidden = open.length > 0;
    // held in wrap-up only for calls that ended with the page open (away: nobody held them)
    bannerEl.hidden = !(config.require_outcome && open.some((e) => holding(e.card)));
    ringBarUpdate(open);
  }

  // ------------------------------------------------------------------ rendering

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function badge(text, kind) {
    return el("span", `badge ${kind}`, text);
  }

  const STATE_LABELS = { ringing: "ringing", answered: "answered", wrapup: "wrap-up" };

  function render(entry) {
    const card = entry.card;
    entry.root.className = `card state-${card.state}`;
    const info = el("div", "info");
    info.append(header(card));
    if (card.ivr) info.append(ivrPart(card.ivr));
    info.append(customerPart(card, entry), historyPart(card));
    if (entry.info) entry.info.replaceWith(info);
    else entry.root.prepend(info);
    entry.info = info;
    updateControls(entry);
    if (card.state === "answered" || card.state === "wrapup") {
      if (!entry.form) {
        entry.form = makeForm(entry);
        entry.root.append(entry.form);
      }
      updateForm(entry);
    }
  }

  function header(card) {
    const head = el("header", "card-head");
    // a heading per card, for moving between calls with a screen reader
    head.append(el("h3", "visually-hidden", `Call from ${caller(card)}, ${STATE_LABELS[card.state] || card.state}`));
    head.append(badge(STATE_LABELS[card.state] || card.state, `state ${card.state}`));
    head.append(el("span", "number", card.display_number || "unknown number"));
    if (card.queue) head.append(el("span", "queue", `queue ${card.queue}`));
    const started = card.queued_at || card.ringing_at;
    if (started) {
      const waited = el("span", "waited");
      if (card.answered_at) {
        waited.textContent = `waited ${duration(card.answered_at - started)}`;
      } else {
        waited.dataset.since = String(started);
        waited.textContent = `waiting ${duration(serverNow() - started)}`;
      }
      head.append(waited);
    }
    return head;
  }

  function customerPart(card, entry) {
    const part = el("section", "customer");
    const lookup = card.lookup;
    const status = lookup ? lookup.status : null;
    if (status === "found") {
      part.append(customerDetails(lookup.cards[0]));
    } else if (status === "several") {
      part.append(el("p", "lookup several", `${lookup.cards.length} customers share this number: pick the caller.`));
      const list = el("div", "matches");
      for (const c of lookup.cards) {
        const item = customerDetails(c);
        if (entry.chosen === c.id) item.classList.add("chosen");
        list.append(item);
      }
      part.append(list);
    } else {
      const texts = {
        none: "New customer: this number is not in the store.",
        internal: "Internal call.",
        invalid: "Number withheld or not a phone number: unknown caller.",
        timeout: "Store unavailable: unknown caller.",
        error: "Store unavailable: unknown caller.",
        skipped: "Not looked up: the service is catching up with a burst of calls.",
      };
      const pending = card.state === "wrapup" ? "Caller not identified." : "Looking up the caller…";
      part.append(el("p", `lookup ${status || "pending"}`, status ? texts[status] : pending));
      if (card.caller_name) part.append(el("p", "caller-name", `Caller ID name: ${card.caller_name}`));
    }
    return part;
  }

  function customerDetails(c) {
    const box = el("div", "who");
    box.dataset.customerId = String(c.id);
    const name = el("a", "name", c.name);
    name.href = `/customers/${encodeURIComponent(c.id)}`;
    name.target = "_blank";
    name.rel = "noopener";
    box.append(name);
    const line = el("p", "type");
    const kind = c.kind === "company" ? "company account" : c.company ? `contact of ${c.company}` : "person";
    line.append(el("span", "kind", kind), badge(c.tier, `tier tier-${c.tier}`), badge(c.lifecycle.replace("_", " "), `life life-${c.lifecycle}`));
    if (c.quadrant) line.append(badge(c.quadrant, `quadrant quadrant-${c.quadrant}`));
    if (c.repeat_caller) line.append(badge("called again within 24 h", "repeat"));
    box.append(line);
    // why the segments say so (crm_sync.segments): the tier's figures first
    if (c.why && c.why.length) {
      const why = el("ul", "why");
      for (const reason of c.why) why.append(el("li", null, reason));
      box.append(why);
    }
    const facts = [c.owner && `owner ${c.owner}`, c.language && `speaks ${c.language}`, c.tags.length && c.tags.join(", ")];
    const text = facts.filter(Boolean).join(" · ");
    if (text) box.append(el("p", "facts", text));
    if (c.open_items.length) box.append(timeline("Open follow-ups and tickets", c.open_items, "open"));
    if (c.recent.length) box.append(timeline("Last interactions", c.recent, "recent"));
    return box;
  }

  function timeline(title, items, className) {
    const part = el("div", `timeline ${className}`);
    part.append(el("h4", null, title));
    const list = el("ul");
    for (const item of items) {
      const li = el("li", `kind-${item.kind}`);
      li.append(timeEl(null, item.occurred_at, day), el("span", "kind", item.kind));
      const label = item.kind === "outcome" ? config.dispositions[item.title] || item.title : item.title;
      li.append(el("span", "title", label));
      if (item.due_at) li.append(el("span", "due", `due ${day(item.due_at)}`));
      if (item.agent) li.append(el("span", "agent", item.agent));
      if (item.body) li.append(el("p", "note", item.body)); // what the last agent wrote
      list.append(li);
    }
    part.append(list);
    return part;
  }

  const IDENTIFIED = { caller_id: "by caller ID", account: "by customer number", none: "not identified" };

  // What the caller already told the IVR (ivr.walk.Findings), so the agent never asks again.
  function ivrPart(ivr) {
    const part = el("section", "ivr");
    part.append(ivrHead(ivr));
    const steps = ivr.steps || [];
    if (steps.length) part.append(ivrPath(steps));
    const flags = ivrFlags(ivr);
    if (flags.childNodes.length) part.append(flags);
    return part;
  }

  function ivrHead(ivr) {
    const head = el("p", "ivr-head");
    head.append(el("strong", null, "IVR"), el("span", "identified", IDENTIFIED[ivr.identified_by] || ivr.identified_by));
    if (ivr.customer_name) head.append(el("span", "ivr-customer", ivr.customer_name));
    if (ivr.language) head.append(el("span", "ivr-language", `language ${ivr.language}`));
    return head;
  }

  // The path in the server's words (screenpop.cards.ivr_view): the step's label from the
  // menu, what the caller did there, and the figure they were told, in this locale's format.
  function ivrPath(steps) {
    // one step per span that never breaks inside, so the line wraps only between steps
    const line = el("p", "ivr-path");
    steps.forEach((step, i) => {
      if (i) line.append(document.createTextNode(" → "));
      const told = step.told ? ` ${toldText(step.told)}` : "";
      const span = el("span", "step", `${step.label}: ${step.text}${told}`);
      span.dataset.step = step.step;
      line.append(span);
    });
    return line;
  }

  // A figure the IVR said (ivr.walk.FigureValue): an amount with its currency, a count, an
  // order's status, or nothing on record.
  function toldText(told) {
    if (told.kind === "amount") return money(told.value, told.currency);
    if (told.kind === "number") return Number.isFinite(Number(told.value)) ? number(Number(told.value)) : String(told.value);
    if (told.kind === "none") return "nothing on record";
    return String(told.value).replace(/[_-]/g, " ");
  }

  function ivrFlags(ivr) {
    const flags = el("p", "ivr-flags");
    if (ivr.callback) flags.append(badge("callback requested", "callback"));
    const route = ivr.route;
    if (route) {
      flags.append(el("span", "ivr-route", `queue ${route.queue}, priority ${route.priority}`));
      if (route.owner) flags.append(el("span", "ivr-owner", `owner first: ${route.owner}`));
      if (route.winback) flags.append(badge("win-back", "winback"));
    }
    if (ivr.hung_up) flags.append(badge(`hung up in the IVR at ${ivr.ended_at_label || ivr.ended_at_step}`, "hungup"));
    // each answer against its scale ("Attitude 4 of 5", "Solved yes")
    const answers = (ivr.survey || []).map((answer) => `${answer.label} ${answer.text}`);
    if (answers.length) flags.append(el("span", "ivr-scores", `survey: ${answers.join(", ")}`));
    return flags;
  }

  function historyPart(card) {
    const part = el("details", "history");
    part.append(el("summary", null, `This call (${card.history.length})`));
    const list = el("ol");
    for (const [at, text] of card.history) {
      const li = el("li");
      li.append(at ? timeEl(null, at, clock) : el("time", null, "–"), document.createTextNode(` ${text}`));
      list.append(li);
    }
    part.append(list);
    return part;
  }

  // ------------------------------------------------------------------ call controls

  // Hang up and blind transfer (POST /api/calls/{pbx}/{call_id}/hangup | transfer), offered
  // on an answered card only: the agent acts on their own side of the call. The status says
  // what is going on; on success the card moves to wrap-up once the call model sees the
  // agent's part end. The API's message is shown as text, like everything on the card.
  const TRANSFER_KINDS = [
    ["queue", "Queue", "transfer-queues"],
    ["agent", "Agent", "transfer-agents"],
    ["number", "Number", null],
  ];

  function updateControls(entry) {
    const card = entry.card;
    const answered = card.state === "answered";
    if (!entry.controls) {
      if (!answered) return;
      entry.controls = makeControls(entry);
      entry.info.after(entry.controls);
    }
    const controls = entry.controls;
    controls.querySelector(".call-actions").hidden = !answered;
    // after the call left the agent: only what was said about the last action stays
    controls.hidden = !answered && !controls.querySelector(".control-status").textContent;
    const who = caller(card);
    controls.querySelector("button.hangup").setAttribute("aria-label", `Hang up the call from ${who}`);
    controls.querySelector("form.transfer button[type=submit]").setAttribute("aria-label", `Transfer the call from ${who}`);
    controls.querySelector("form.transfer").setAttribute("aria-label", `Transfer the call from ${who}`);
  }

  function makeControls(entry) {
    const controls = el("div", "call-controls");
    const actions = el("div", "call-actions");
    const hang = el("button", "hangup", "Hang up");
    hang.type = "button";
    hang.addEventListener("click", () => hangUp(entry));

    const form = el("form", "transfer");
    form.noValidate = true;
    const kindLabel = el("label", "transfer-kind", "Transfer to ");
    const kind = el("select");
    kind.name = "kind";
    for (const [value, text] of TRANSFER_KINDS) {
      const option = el("option", null, text);
      option.value = value;
      kind.append(option);
    }
    kindLabel.append(kind);
    const targetLabel = el("label", "transfer-target", "Target ");
    const target = el("input");
    target.name = "target";
    target.maxLength = 64;
    target.autocomplete = "off";
    targetLabel.append(target);
    const go = el("button", null, "Transfer");
    go.type = "submit";
    form.append(kindLabel, targetLabel, go);
    const listFor = () => {
      const [, , list] = TRANSFER_KINDS.find(([value]) => value === kind.value) || [];
      if (list && document.getElementById(list)) target.setAttribute("list", list);
      else target.removeAttribute("list");
      target.placeholder = kind.value === "number" ? "phone number" : kind.value === "agent" ? "agent" : "queue name";
    };
    kind.addEventListener("change", listFor);
    listFor();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      transferCall(entry);
    });

    actions.append(hang, form);
    const status = el("p", "control-status");
    status.setAttribute("role", "status");
    status.tabIndex = -1;
    controls.append(actions, status);
    return controls;
  }

  function controlStatus(entry, state, text) {
    const status = entry.controls.querySelector(".control-status");
    status.className = `control-status ${state}`;
    status.textContent = text;
  }

  function controlsBusy(entry, busy) {
    const controls = entry.controls;
    // the buttons are disabled while the request runs: keyboard focus waits on the status
    if (busy && controls.contains(document.activeElement)) controls.querySelector(".control-status").focus();
    for (const field of controls.querySelectorAll("button, input, select")) field.disabled = busy;
  }

  async function callAction(entry, what, body, pending, done, failed, retry) {
    if (entry.acting) return;
    entry.acting = true;
    controlStatus(entry, "pending", pending);
    controlsBusy(entry, true);
    const card = entry.card;
    const url = `/api/calls/${encodeURIComponent(card.pbx)}/${encodeURIComponent(card.call_id)}/${what}`;
    const { res, data } = await postJson(url, body);
    entry.acting = false;
    if (res !== null && res.ok) {
      controlStatus(entry, "ok", done); // the buttons stay off: the call is leaving the agent
      updateControls(entry);
      return;
    }
    controlsBusy(entry, false);
    controlStatus(entry, "error", failure(res, data, failed));
    updateControls(entry);
    // the keyboard goes back to what the agent will correct (the status was read out)
    if (retry && document.activeElement === entry.controls.querySelector(".control-status")) retry.focus();
  }

  function hangUp(entry) {
    callAction(entry, "hangup", {}, "Hanging up…", "Hung up", "Not hung up");
  }

  function transferCall(entry) {
    const form = entry.controls.querySelector("form.transfer");
    const kind = form.elements.kind.value;
    const target = form.elements.target.value.trim();
    if (!target) {
      controlStatus(entry, "error", "Give the queue, agent or number to transfer to.");
      form.elements.target.focus();
      return;
    }
    const body = { type: "blind", kind, target };
    const done = `Transferred to ${kind} ${target}`;
    callAction(entry, "transfer", body, "Transferring…", done, "Not transferred", form.elements.target);
  }

  // ------------------------------------------------------------------ the outcome form

  function makeForm(entry) {
    const form = formTemplate.content.firstElementChild.cloneNode(true);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submit(entry);
    });
    form.elements.disposition.addEventListener("change", () => updateForm(entry));
    return form;
  }

  // A wrap-up card the agent is held for: not one that ended while their page was closed,
  // nor one whose hold the longest wrap-up released
  function holding(card) {
    return card.state === "wrapup" && !card.away && !card.hold_released;
  }

  // A disposition that needs no customer (config: customer = false, e.g. a wrong number)
  function nobodyNeeded(code) {
    return (config.nobody_needed || []).includes(code);
  }

  function updateForm(entry) {
    const { card, form } = entry;
    if (card.outcome_saved && !entry.saved) showSaved(entry); // saved in another tab, or before a reload
    const lookup = card.lookup;
    const status = lookup ? lookup.status : null;
    form.querySelector(".wrapup-hint").hidden = !(config.require_outcome && holding(card));
    form.querySelector(".released-hint").hidden = !(card.state === "wrapup" && card.hold_released);
    const pick = form.querySelector(".pick");
    pick.hidden = status !== "several";
    const choices = pick.querySelector(".choices");
    choices.replaceChildren();
    if (status === "several") {
      for (const c of lookup.cards) {
        const label = el("label", "choice");
        const radio = el("input");
        radio.type = "radio";
        radio.name = `customer-${card.id}`;
        radio.value = String(c.id);
        radio.checked = entry.chosen === c.id;
        radio.addEventListener("change", () => {
          entry.chosen = c.id;
          if (!entry.info) return; // a form of My day: no card to mark
          for (const item of entry.info.querySelectorAll(".matches .who")) {
            item.classList.toggle("chosen", item.dataset.customerId === String(c.id));
          }
        });
        label.append(radio, document.createTextNode(` ${c.name}${c.company ? ` (${c.company})` : ""}`));
        choices.append(label);
      }
    }
    // the button says whose outcome it saves: several cards may be open at once
    form.querySelector("button[type=submit]").setAttribute("aria-label", `Save outcome: ${caller(card)}`);
    const known = status === "found" || status === "several" || status === "internal";
    const nobody = nobodyNeeded(form.elements.disposition.value);
    form.querySelector(".new-customer").hidden = known || nobody;
    // what the network says the caller is called: offered, never filled in behind the agent
    const offer = form.querySelector(".caller-id-name");
    const name = callerIdName(card.caller_name);
    offer.hidden = known || nobody || !name || entry.saved;
    if (!offer.hidden) {
      const button = offer.querySelector("button");
      button.textContent = `Use the caller ID name: ${name}`;
      button.onclick = () => {
        form.elements.new_customer_name.value = name;
        form.elements.new_customer_name.focus();
      };
    }
  }

  // A caller ID name worth offering: not empty, not a number, not a carrier's placeholder.
  function callerIdName(raw) {
    const name = (raw || "").trim();
    if (!name || /^[+\d\s()-]+$/.test(name)) return "";
    if (/^(unknown|anonymous|private|restricted|unavailable|wireless caller|cell phone( \w\w)?)$/i.test(name)) return "";
    return name;
  }

  function draft(entry) {
    const form = entry.form;
    const lookup = entry.card.lookup;
    const status = lookup ? lookup.status : null;
    const body = {
      disposition: form.elements.disposition.value,
      notes: form.elements.notes.value,
      followup_owner: form.elements.followup_owner.value.trim() || null,
      followup_due: null,
      customer_id: null,
      new_customer_name: null,
    };
    const due = form.elements.followup_date.value;
    if (due) {
      const [y, m, d] = due.split("-").map(Number);
      const [hh, mm] = (form.elements.followup_time.value || "09:00").split(":").map(Number);
      body.followup_due = new Date(y, m - 1, d, hh, mm, 0).toISOString(); // the agent's local time
    }
    if (status === "found") body.customer_id = lookup.cards[0].id;
    else if (status === "several") body.customer_id = entry.chosen;
    else body.new_customer_name = form.elements.new_customer_name.value.trim() || null;
    if (!body.disposition) return { error: "Choose a disposition." };
    if (nobodyNeeded(body.disposition) && body.customer_id === null) return { body }; // a wrong number
    if (status === "several" && body.customer_id === null) return { error: "Pick the customer who is calling." };
    if (status !== "found" && status !== "several" && status !== "internal" && !body.new_customer_name) {
      return { error: "Give the new customer's name." };
    }
    return { body };
  }

  function submit(entry) {
    if (entry.saving || entry.saved) return;
    if (entry.retry) clearTimeout(entry.retry);
    entry.retry = null;
    const { body, error } = draft(entry);
    if (error) {
      saveStatus(entry, "error", error);
      return;
    }
    entry.key = entry.key || newKey(); // the same key for every retry of this draft
    post(entry, body);
  }

  async function post(entry, body) {
    entry.saving = true;
    const button = entry.form.querySelector("button[type=submit]");
    // the button is disabled while saving: keyboard focus waits on the status, in the card
    if (entry.form.contains(document.activeElement)) entry.form.querySelector(".save-status").focus();
    button.disabled = true;
    saveStatus(entry, "pending", "Saving…");
    const url = `/api/calls/${encodeURIComponent(entry.card.pbx)}/${encodeURIComponent(entry.card.call_id)}/outcome`;
    let res = null;
    try {
      res = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf },
        body: JSON.stringify({ ...body, key: entry.key }),
      });
    } catch (e) {
      res = null;
    }
    entry.saving = false;
    if (res !== null && res.ok) {
      showSaved(entry);
      loadDay(); // the call shows its outcome there
      return;
    }
    button.disabled = false;
    if (res !== null && res.status === 401) {
      location.assign("/login?next=%2F");
      return;
    }
    if (res === null || res.status >= 500) {
      // nothing or maybe something was written: keep the draft and the key, try again
      entry.attempts = (entry.attempts || 0) + 1;
      const delay = Math.min(30, 2 ** entry.attempts);
      const why = res === null ? "No connection" : "The database is unavailable";
      saveStatus(entry, "retry", `${why}: draft kept, retrying in ${delay} s.`);
      entry.retry = setTimeout(() => submit(entry), delay * 1000);
      return;
    }
    let message = `Not saved (${res.status}).`;
    try {
      message = `Not saved: ${(await res.json()).message}`;
    } catch (e) {
      // keep the generic message
    }
    entry.key = null; // nothing was written: the corrected draft is a new submission
    saveStatus(entry, "error", message);
  }

  // Saved: the form is done with. During the call the card stays (it closes when the call
  // ends).
  function showSaved(entry) {
    entry.saved = true;
    const during = entry.card.state === "answered";
    saveStatus(entry, "saved", during ? "Saved ✓ — the card closes when the call ends." : "Saved ✓");
    for (const field of entry.form.elements) field.disabled = true;
  }

  function saveStatus(entry, state, text) {
    const status = entry.form.querySelector(".save-status");
    status.className = `save-status ${state}`;
    status.textContent = text;
  }

  function newKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // ------------------------------------------------------------------ pause / unpause

  // The agent's own pause in Asterisk's queues: the server sends QueuePause and audits it.
  function setUpPause() {
    const form = document.getElementById("pause-control");
    const { reason, other } = form.elements;
    reason.addEventListener("change", () => {
      other.hidden = reason.value !== "other";
      if (!other.hidden) other.focus();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = reason.value === "other" ? other.value.trim() : reason.value;
      if (!text) {
        pauseStatus(form, "error", "Give a reason.");
        return;
      }
      setPaused(form, true, text);
    });
    form.querySelector(".unpause").addEventListener("click", () => setPaused(form, false, ""));
  }

  async function setPaused(form, paused, reason) {
    const buttons = form.querySelectorAll("button");
    for (const button of buttons) button.disabled = true;
    pauseStatus(form, "pending", paused ? "Pausing…" : "Unpausing…");
    let res = null;
    try {
      res = await fetch(`/api/agents/${encodeURIComponent(config.agent_id)}/pause`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf },
        body: JSON.stringify({ paused, reason }),
      });
    } catch (e) {
      res = null;
    }
    for (const button of buttons) button.disabled = false;
    if (res !== null && res.ok) {
      pauseStatus(form, "ok", paused ? `Paused: ${reason}` : "Available");
      return;
    }
    if (res !== null && res.status === 401) {
      location.assign("/login?next=%2F");
      return;
    }
    let message = res === null ? "No connection." : `Failed (${res.status}).`;
    try {
      const data = await res.json();
      if (data.message) message = data.message;
    } catch (e) {
      // keep the generic message
    }
    pauseStatus(form, "error", message);
  }

  // What Asterisk says of the agent's pause now: after a reload or a reconnect the page shows
  // a pause it did not place itself (the wrap-up hold, a supervisor's, another tab's).
  async function loadPause() {
    const form = document.getElementById("pause-control");
    let res = null;
    try {
      res = await fetch(`/api/agents/${encodeURIComponent(config.agent_id)}/pause`, {
        credentials: "same-origin",
      });
    } catch (e) {
      return; // no connection: the reconnect reads it again
    }
    if (!res.ok) return; // no PBX configured: there is no pause to show
    const state = await res.json();
    if (!state.paused) pauseStatus(form, "ok", "Available");
    else if (state.reason === "wrap-up") pauseStatus(form, "ok", "Held in wrap-up");
    else pauseStatus(form, "ok", state.reason ? `Paused: ${state.reason}` : "Paused");
  }

  function pauseStatus(form, state, text) {
    const status = form.querySelector(".pause-status");
    status.className = `pause-status ${state}`;
    status.textContent = text;
  }

  // ------------------------------------------------------------------ follow-ups

  // The agent's follow-ups (their own and their queues'). Dial calls the customer, then the
  // agent's phone, and answers once the customer answered or not; Close ends one by hand;
  // Reschedule puts it off. The list is read again every minute, when the server says one
  // changed, and after a reconnect, as many pages as the agent opened with "Show more"
  // (pages follow each other by the server's cursor, so a follow-up done meanwhile shifts
  // none out of view); a row just dialled, closed or put off stays shown a while, so the
  // agent sees how it ended. "Today" is this browser's day: its bounds go to the server.
  // Text is set with textContent only, like the cards.
  const followupsEl = document.getElementById("followups");
  const followupTable = followupsEl.querySelector("table");
  const followupBody = followupsEl.querySelector("tbody");
  const followupEmpty = followupsEl.querySelector(".followups-empty");
  const followupStatus = followupsEl.querySelector(".followups-status");
  const followupCount = followupsEl.querySelector(".count");
  const followupMore = followupsEl.querySelector(".followups-more");
  const followupFilter = followupsEl.querySelector(".followups-filter");
  const closeTemplate = document.getElementById("close-template");
  const rescheduleTemplate = document.getElementById("reschedule-template");
  const FOLLOWUP_REFRESH_MS = 60000;
  const KEEP_SHOWN_MS = 120000;
  const RESULTS = {
    reached: "reached",
    done: "done",
    cancelled: "cancelled",
    no_answer: "no answer",
    busy: "busy",
    failed: "call failed",
    unknown: "result unknown",
    not_placed: "not placed",
  };
  const followupRows = new Map(); // id -> {item, tr, form, message}
  const acted = new Map(); // id -> {item, until}: rows this page just dialled or closed
  const inFlight = new Set(); // ids with a request on its way
  let loadingFollowups = false;
  let loadFollowupsAgain = false;
  let followupShow = "all"; // the filter: all | mine | queues | overdue | today
  let followupPages = 1; // pages the agent opened with "Show more"

  async function loadFollowups() {
    if (loadingFollowups) {
      loadFollowupsAgain = true;
      return;
    }
    loadingFollowups = true;
    const show = followupShow;
    try {
      const items = [];
      let page = null;
      for (let n = 0; n < followupPages && (n === 0 || page.next); n++) {
        const res = await fetch(followupsUrl(show, n === 0 ? null : page.next), { credentials: "same-origin" });
        if (res.status === 401) {
          location.assign("/login?next=%2F");
          return;
        }
        if (!res.ok) {
          const data = await res.json().catch(() => null);
          followupMessage("error", data && data.message ? data.message : `Follow-ups not loaded (${res.status}).`);
          return;
        }
        page = await res.json();
        items.push(...page.followups);
      }
      if (show !== followupShow) return; // the filter changed meanwhile: the next load shows it
      showFollowups(items);
      countFollowups(page.counts, items.length, page.next);
      followupMessage("", "");
    } catch (e) {
      followupMessage("error", "No connection: follow-ups not loaded.");
    } finally {
      loadingFollowups = false;
      if (loadFollowupsAgain) {
        loadFollowupsAgain = false;
        loadFollowups();
      }
    }
  }

  function followupsUrl(show, after) {
    const params = new URLSearchParams({ show });
    if (show === "today") {
      const now = new Date(serverNow() * 1000);
      params.set("day_start", new Date(now.getFullYear(), now.getMonth(), now.getDate()).toISOString());
      params.set("day_end", new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1).toISOString());
    }
    if (after) params.set("after", after);
    return `/api/followups?${params}`;
  }

  function showFollowups(items) {
    const now = Date.now();
    const shown = new Map(items.map((item) => [item.id, item]));
    for (const [id, kept] of acted) {
      if (kept.until < now && !inFlight.has(id)) acted.delete(id);
      else if (inFlight.has(id) || !shown.has(id)) shown.set(id, kept.item);
    }
    const ordered = [...shown.values()].sort(byDue);
    for (const [id, entry] of followupRows) {
      if (!shown.has(id)) {
        entry.tr.remove();
        followupRows.delete(id);
      }
    }
    ordered.forEach((item, index) => {
      let entry = followupRows.get(item.id);
      if (!entry) {
        entry = { item, tr: el("tr"), form: null, message: null };
        followupRows.set(item.id, entry);
      }
      if (!entry.form) {
        entry.item = item; // a row with its close form open is left as the agent sees it
        fillFollowup(entry);
      }
      const at = followupBody.children[index];
      if (at !== entry.tr) followupBody.insertBefore(entry.tr, at || null);
    });
    followupTable.hidden = followupRows.size === 0;
    followupEmpty.hidden = followupRows.size > 0;
  }

  function byDue(a, b) {
    if (!a.due_at !== !b.due_at) return a.due_at ? -1 : 1; // without a due time: last
    if (a.due_at && b.due_at && a.due_at !== b.due_at) return Date.parse(a.due_at) - Date.parse(b.due_at);
    return a.id - b.id;
  }

  // The heading counts the whole list (every page), as the server counted it.
  function countFollowups(counts, shown, next) {
    const late = counts.overdue ? ` · ${counts.overdue} overdue` : "";
    followupCount.textContent = counts.todo ? `(${counts.todo}${late})` : "";
    followupMore.hidden = !next;
    followupMore.querySelector(".shown").textContent = `Showing ${shown} of ${counts.matching}.`;
  }

  function fillFollowup(entry) {
    const f = entry.item;
    entry.tr.className = `followup state-${f.state}${f.overdue ? " overdue" : ""}`;
    entry.tr.dataset.followupId = String(f.id);
    const due = el("td", "col-due", f.due_at ? when(f.due_at) : "–");
    if (f.overdue && f.state !== "closed") due.append(badge("overdue", "overdue"));
    const customer = el("td", "col-customer");
    const name = el("a", "name", f.customer.name);
    name.href = `/customers/${encodeURIComponent(f.customer.id)}`;
    name.target = "_blank";
    name.rel = "noopener";
    customer.append(name);
    if (f.number) customer.append(el("small", "number", f.number));
    const why = el("td", "col-why", f.title);
    if (f.body) why.append(el("p", "note", f.body)); // the notes of the call that asked for it
    const owner = el("td", "col-owner", ownerText(f));
    const state = el("td", "col-state", stateText(f));
    const actions = el("td", "col-actions");
    if (f.state !== "closed") {
      const busy = inFlight.has(f.id);
      const dialButton = el("button", "dial", busy && f.state === "dialling" ? "Dialling…" : "Dial");
      dialButton.type = "button";
      dialButton.setAttribute("aria-label", `${dialButton.textContent} ${f.customer.name}`);
      dialButton.disabled = busy || f.state === "dialling";
      dialButton.addEventListener("click", () => dialFollowup(entry));
      const closeButton = el("button", "close", "Close");
      closeButton.setAttribute("aria-label", `Close the follow-up for ${f.customer.name}`);
      closeButton.type = "button";
      closeButton.disabled = busy;
      closeButton.addEventListener("click", () => openCloseForm(entry));
      const laterButton = el("button", "reschedule", "Reschedule");
      laterButton.setAttribute("aria-label", `Reschedule the follow-up for ${f.customer.name}`);
      laterButton.type = "button";
      laterButton.disabled = busy;
      laterButton.addEventListener("click", () => openRescheduleForm(entry));
      actions.append(dialButton, closeButton, laterButton);
    }
    if (entry.message) {
      const message = el("span", `row-status ${entry.message.kind}`, entry.message.text);
      message.setAttribute("role", "status");
      actions.append(message);
    }
    if (entry.form) actions.append(entry.form);
    entry.tr.replaceChildren(due, customer, why, owner, state, actions);
  }

  function stateText(f) {
    if (f.state === "dialling") return "dialling…";
    if (f.state === "closed") return `closed · ${RESULTS[f.result] || f.result || "done"}`;
    return f.result ? `open · last try: ${RESULTS[f.result] || f.result}` : "open";
  }

  function ownerText(f) {
    if (!f.owner) return "–";
    if (f.owner === config.agent_id) return "you";
    return f.owner_label || (f.owner.startsWith("queue:") ? `queue ${f.owner.slice(6)}` : f.owner);
  }

  async function dialFollowup(entry) {
    const before = entry.item;
    if (inFlight.has(before.id)) return;
    inFlight.add(before.id);
    entry.message = { kind: "pending", text: "Calling the customer…" };
    remember({ ...before, state: "dialling" }, entry);
    const { res, data } = await postJson(`/api/followups/${encodeURIComponent(before.id)}/dial`, {});
    inFlight.delete(before.id);
    if (res !== null && res.ok) {
      const f = data.followup;
      entry.message = f.state === "closed" ? null : { kind: "error", text: `Not reached: ${RESULTS[f.result] || f.result}.` };
      remember(f, entry);
      loadFollowups(); // the counts
    } else {
      entry.message = { kind: "error", text: failure(res, data, "Not dialled") };
      remember(before, entry);
    }
  }

  function openCloseForm(entry) {
    if (entry.form) return;
    const form = closeTemplate.content.firstElementChild.cloneNode(true);
    entry.form = form;
    form.querySelector(".cancel").addEventListener("click", () => {
      entry.form = null;
      fillFollowup(entry);
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const item = entry.item;
      if (inFlight.has(item.id)) return;
      inFlight.add(item.id);
      for (const field of form.elements) field.disabled = true;
      const body = { result: form.elements.result.value, note: form.elements.note.value };
      const { res, data } = await postJson(`/api/followups/${encodeURIComponent(item.id)}/close`, body);
      inFlight.delete(item.id);
      if (res !== null && res.ok) {
        entry.form = null;
        entry.message = null;
        remember(data.followup, entry);
        loadFollowups(); // the counts
        return;
      }
      for (const field of form.elements) field.disabled = false;
      entry.message = { kind: "error", text: failure(res, data, "Not closed") };
      fillFollowup(entry);
    });
    fillFollowup(entry);
    form.elements.result.focus();
  }

  function openRescheduleForm(entry) {
    if (entry.form) return;
    const form = rescheduleTemplate.content.firstElementChild.cloneNode(true);
    entry.form = form;
    const due = entry.item.due_at ? new Date(entry.item.due_at) : null;
    const start = due && due.getTime() > serverNow() * 1000 ? due : new Date((serverNow() + 3600) * 1000);
    form.elements.date.value = localDate(start);
    form.elements.time.value = localTime(start);
    form.querySelector(".cancel").addEventListener("click", () => {
      entry.form = null;
      fillFollowup(entry);
    });
    form.querySelector(".snooze-hour").addEventListener("click", () => {
      reschedule(entry, form, new Date((serverNow() + 3600) * 1000));
    });
    form.querySelector(".snooze-tomorrow").addEventListener("click", () => {
      const now = new Date(serverNow() * 1000);
      reschedule(entry, form, new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1, 9, 0));
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const date = form.elements.date.value;
      const time = form.elements.time.value;
      if (!date || !time) {
        entry.message = { kind: "error", text: "Pick a date and a time." };
        fillFollowup(entry);
        return;
      }
      const [y, m, d] = date.split("-").map(Number);
      const [hh, mm] = time.split(":").map(Number);
      reschedule(entry, form, new Date(y, m - 1, d, hh, mm, 0)); // the agent's local time
    });
    fillFollowup(entry);
    form.elements.date.focus();
  }

  async function reschedule(entry, form, due) {
    const item = entry.item;
    if (inFlight.has(item.id)) return;
    inFlight.add(item.id);
    for (const field of form.elements) field.disabled = true;
    const url = `/api/followups/${encodeURIComponent(item.id)}/reschedule`;
    const { res, data } = await postJson(url, { due_at: due.toISOString() });
    inFlight.delete(item.id);
    if (res !== null && res.ok) {
      entry.form = null;
      entry.message = { kind: "ok", text: `Now due ${when(data.followup.due_at)}.` };
      remember(data.followup, entry);
      loadFollowups(); // its place in the list, and the counts
      return;
    }
    for (const field of form.elements) field.disabled = false;
    entry.message = { kind: "error", text: failure(res, data, "Not rescheduled") };
    fillFollowup(entry);
  }

  function localDate(d) {
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  function localTime(d) {
    return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
  }

  function remember(item, entry) {
    acted.set(item.id, { item, until: Date.now() + KEEP_SHOWN_MS });
    entry.item = item;
    fillFollowup(entry);
  }

  async function postJson(url, body) {
    let res = null;
    let data = null;
    try {
      res = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf },
        body: JSON.stringify(body),
      });
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res !== null && res.status === 401) location.assign("/login?next=%2F");
    return { res, data };
  }

  function failure(res, data, what) {
    if (res === null) return `${what}: no connection.`;
    return data && data.message ? data.message : `${what} (${res.status}).`;
  }

  function followupMessage(state, text) {
    followupStatus.className = `followups-status ${state}`;
    followupStatus.textContent = text;
  }

  // ------------------------------------------------------------------ my day

  // The agent's own calls of their day (this browser's day: its bounds go to the server),
  // newest first, with the outcome saved, or "Outcome missing" and a button that opens the
  // cards' outcome form in the row. Calls that ended while no page was open wait here, not
  // on the screen. Read again when a card goes to wrap-up or closes, when an outcome is
  // saved, after a reconnect and every few minutes (the day turns at midnight). Text is set
  // with textContent only, like the cards.
  const dayEl = document.getElementById("my-day");
  const dayList = dayEl.querySelector(".my-day-list");
  const dayEmpty = dayEl.querySelector(".my-day-empty");
  const dayStatus = dayEl.querySelector(".my-day-status");
  const dayCount = dayEl.querySelector(".count");
  const DAY_REFRESH_MS = 300000;
  const dayRows = new Map(); // call id -> {item, li, entry (the open outcome form), message}
  let loadingDay = false;
  let loadDayAgain = false;
  let dayTimer = null;

  function scheduleDay() {
    if (dayTimer !== null) clearTimeout(dayTimer);
    dayTimer = setTimeout(() => {
      dayTimer = null;
      loadDay();
    }, 300);
  }

  async function loadDay() {
    if (loadingDay) {
      loadDayAgain = true;
      return;
    }
    loadingDay = true;
    try {
      const now = new Date(serverNow() * 1000);
      const params = new URLSearchParams({
        day_start: new Date(now.getFullYear(), now.getMonth(), now.getDate()).toISOString(),
        day_end: new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1).toISOString(),
      });
      const res = await fetch(`/api/agents/me/day?${params}`, { credentials: "same-origin" });
      if (res.status === 401) {
        location.assign("/login?next=%2F");
        return;
      }
      const data = await res.json().catch(() => null);
      if (!res.ok || data === null) {
        dayMessage("error", data && data.message ? data.message : `My day not loaded (${res.status}).`);
        return;
      }
      showDay(data.calls);
      dayMessage(data.store_ok ? "" : "error", data.store_ok ? "" : "The store is unavailable: only calls without an outcome are listed.");
    } catch (e) {
      dayMessage("error", "No connection: my day not loaded.");
    } finally {
      loadingDay = false;
      if (loadDayAgain) {
        loadDayAgain = false;
        loadDay();
      }
    }
  }

  function showDay(calls) {
    const shown = new Set(calls.map((item) => item.call_id));
    for (const [id, row] of dayRows) {
      if (!shown.has(id)) {
        row.li.remove();
        dayRows.delete(id);
      }
    }
    calls.forEach((item, index) => {
      let row = dayRows.get(item.call_id);
      if (!row) {
        row = { item, li: el("li"), entry: null, message: null };
        dayRows.set(item.call_id, row);
      }
      row.item = item;
      if (!item.outcome_missing) row.entry = null; // saved: the row shows the outcome
      if (!row.entry || !row.entry.saving) fillDay(row);
      const at = dayList.children[index];
      if (at !== row.li) dayList.insertBefore(row.li, at || null);
    });
    const missing = calls.filter((item) => item.outcome_missing).length;
    dayCount.textContent = calls.length ? `(${calls.length}${missing ? ` · ${missing} without outcome` : ""})` : "";
    dayEmpty.hidden = calls.length > 0;
  }

  function dayWho(item) {
    if (item.customer) return item.customer.name;
    return item.number || "an unknown number";
  }

  function fillDay(row) {
    const item = row.item;
    row.li.className = `day-call${item.outcome_missing ? " missing" : ""}`;
    row.li.dataset.callId = item.call_id;
    const at = timeEl("at", item.at, time);
    const who = el("span", "who");
    if (item.customer) {
      const name = el("a", "name", item.customer.name);
      name.href = `/customers/${encodeURIComponent(item.customer.id)}`;
      name.target = "_blank";
      name.rel = "noopener";
      who.append(name);
    } else {
      who.append(el("span", "number", item.number || "unknown number"));
    }
    const facts = [item.direction === "outbound" ? "outbound" : "inbound"];
    if (item.talk_seconds !== null) facts.push(duration(item.talk_seconds));
    const meta = el("span", "meta", facts.join(" · "));
    const result = el("div", "result");
    if (item.outcome) {
      result.append(el("span", "label", item.outcome.label));
      if (item.outcome.notes) result.append(el("p", "note", item.outcome.notes));
    } else {
      result.append(badge("Outcome missing", "missing"));
      if (item.away) result.append(el("span", "away-note", "ended while your page was closed"));
      const what = `the call from ${dayWho(item)} at ${at.textContent}`;
      if (item.finishable && !row.entry) {
        const finish = el("button", "finish", "Finish outcome");
        finish.type = "button";
        finish.setAttribute("aria-label", `Finish the outcome of ${what}`);
        finish.addEventListener("click", () => openDayForm(row));
        result.append(finish);
      }
      if (item.away && item.card_id && !row.entry) {
        const dismiss = el("button", "dismiss", "Dismiss");
        dismiss.type = "button";
        dismiss.setAttribute("aria-label", `Dismiss ${what}`);
        dismiss.addEventListener("click", () => dismissDay(row, dismiss));
        result.append(dismiss);
      }
      if (!item.finishable) result.append(el("span", "quiet", "no longer open for an outcome here"));
    }
    if (row.message) {
      const message = el("span", `row-status ${row.message.kind}`, row.message.text);
      message.setAttribute("role", "status");
      result.append(message);
    }
    const form = row.entry ? row.entry.form : null;
    if (form === null || form.parentNode !== row.li) {
      row.li.replaceChildren(at, who, meta, result);
      if (form) row.li.append(form);
      return;
    }
    // the open form stays where it is: moving it would take the focus from what the agent types
    for (const child of [...row.li.children]) if (child !== form) child.remove();
    form.before(at, who, meta, result);
  }

  // The cards' own outcome form, for a call of the day: same fields, same POST, same retries.
  function openDayForm(row) {
    const item = row.item;
    const found = item.customer ? { status: "found", e164: null, cards: [item.customer] } : null;
    const card = {
      id: item.card_id || `day/${item.pbx}/${item.call_id}`,
      pbx: item.pbx,
      call_id: item.call_id,
      state: "wrapup",
      away: true,
      outcome_saved: false,
      lookup: found,
      caller_name: "",
      display_number: item.number || "",
    };
    const entry = { card, root: row.li, info: null, form: null, chosen: null, key: null };
    entry.form = makeForm(entry);
    const cancel = el("button", "cancel", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => {
      if (entry.retry) clearTimeout(entry.retry);
      row.entry = null;
      fillDay(row);
    });
    entry.form.querySelector(".actions").append(cancel);
    row.entry = entry;
    row.message = null;
    updateForm(entry);
    fillDay(row);
    entry.form.elements.disposition.focus();
  }

  async function dismissDay(row, button) {
    button.disabled = true;
    const item = row.item;
    const url = `/api/calls/${encodeURIComponent(item.pbx)}/${encodeURIComponent(item.call_id)}/dismiss`;
    const { res, data } = await postJson(url, {});
    if (res !== null && res.ok) {
      loadDay();
      return;
    }
    row.message = { kind: "error", text: failure(res, data, "Not dismissed") };
    fillDay(row);
  }

  function dayMessage(state, text) {
    dayStatus.className = `my-day-status ${state}`;
    dayStatus.textContent = text;
  }

  // ------------------------------------------------------------------ time

  function serverNow() {
    return Date.now() / 1000 + clockOffset;
  }

  // a <time> for an ISO string or epoch seconds, its text in the given format
  function timeEl(className, value, format) {
    const node = el("time", className, format(value));
    const date = new Date(typeof value === "number" ? value * 1000 : value);
    if (!Number.isNaN(date.getTime())) node.dateTime = date.toISOString();
    return node;
  }

  function tick() {
    for (const node of cardsEl.querySelectorAll("[data-since]")) {
      node.textContent = `waiting ${duration(serverNow() - Number(node.dataset.since))}`;
    }
    dropDeadLink();
  }

  setInterval(tick, 1000);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) reconnectNow();
  });
  window.addEventListener("online", reconnectNow);
  followupFilter.addEventListener("change", (event) => {
    followupShow = event.target.value;
    followupPages = 1;
    for (const id of acted.keys()) if (!inFlight.has(id)) acted.delete(id); // of the last view
    loadFollowups();
  });
  followupMore.querySelector(".more").addEventListener("click", () => {
    followupPages += 1;
    loadFollowups();
  });
  setInterval(loadFollowups, FOLLOWUP_REFRESH_MS);
  setInterval(loadDay, DAY_REFRESH_MS);
  setUpPause();
  setUpAlerts();
  loadPause();
  refreshPage();
  loadFollowups();
  loadDay();
  connect();
})();
