// The customer's page: call one of their numbers (or another) from the agent's own phone.
// The customer is called first; the answer comes once they picked up or not, and the call's
// card pops on the agent page like any call's.
(() => {
  "use strict";
  const config = JSON.parse(document.getElementById("customer-config").textContent);
  const status = document.querySelector(".call-status");
  const other = document.querySelector(".call-other");
  let busy = false;

  const RESULTS = {
    reached: "answered: your phone rings now, the card pops on your agent page",
    no_answer: "no answer",
    busy: "busy",
    failed: "the call failed",
    unknown: "the PBX did not say how the call ended",
    not_placed: "not placed",
  };

  function say(kind, text) {
    status.className = `call-status ${kind}`;
    status.textContent = text;
    status.focus();
  }

  async function call(number, shown, buttons) {
    if (busy) return;
    busy = true;
    buttons.forEach((b) => { b.disabled = true; });
    say("pending", `Calling ${shown}…`);
    let res = null;
    let data = null;
    try {
      res = await fetch(`/api/customers/${encodeURIComponent(config.customer)}/call`, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": config.csrf },
        body: JSON.stringify({ number }),
      });
      data = await res.json();
    } catch (e) {
      data = null;
    }
    busy = false;
    buttons.forEach((b) => { b.disabled = false; });
    if (res !== null && res.status === 401) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
      return;
    }
    if (res === null) {
      say("error", "Not called: no connection.");
    } else if (res.ok) {
      const result = data.call.result;
      say(result === "reached" ? "ok" : "error", `${shown}: ${RESULTS[result] || result}.`);
    } else {
      say("error", data && data.message ? data.message : `Not called (${res.status}).`);
    }
  }

  const buttons = Array.from(document.querySelectorAll("button.call, .call-other button"));
  document.querySelectorAll("button.call").forEach((button) => {
    button.addEventListener("click", () => call(button.dataset.number, button.dataset.shown, buttons));
  });
  other.addEventListener("submit", (event) => {
    event.preventDefault();
    const number = other.elements.number.value.trim();
    if (!number) {
      say("error", "Type the number to call.");
      return;
    }
    call(number, number, buttons);
  });
})();
