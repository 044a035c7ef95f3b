// One date/time format and one money format per locale: the reader's browser's, through Intl.
// Server pages send <time datetime="ISO">UTC fallback</time> and
// <span data-amount="-12.50" data-currency="CNY">fallback</span>; this script rewrites their
// text in the browser's locale and time zone (without it the UTC fallback stays). The agent
// page formats with the same helpers (window.ctiFormats), so a time or an amount reads alike
// on every page. An amount is always shown with its currency; one without a currency is a
// plain number with a note, never given a guessed currency. Text only: no markup is parsed.
"use strict";

window.ctiFormats = (() => {
  const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  const dateOnly = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
  const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: "short" });
  // a call's own history: its events are seconds apart
  const timeSeconds = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });
  const minutes = new Intl.NumberFormat(undefined, { style: "unit", unit: "minute", unitDisplay: "short" });
  const seconds = new Intl.NumberFormat(undefined, { style: "unit", unit: "second", unitDisplay: "short" });
  const units = new Intl.ListFormat(undefined, { type: "unit", style: "narrow" });
  const NO_CURRENCY = "(currency not on record)";

  // an ISO 8601 string or epoch seconds (what the API sends) as a Date
  function toDate(value) {
    return new Date(typeof value === "number" ? value * 1000 : value);
  }

  function formatted(format, value) {
    const date = toDate(value);
    return Number.isNaN(date.getTime()) ? String(value) : format.format(date);
  }

  const when = (value) => formatted(dateTime, value);
  const day = (value) => formatted(dateOnly, value);
  const time = (value) => formatted(timeOnly, value);
  const clock = (value) => formatted(timeSeconds, value);

  function duration(totalSeconds) {
    const s = Math.max(0, Math.round(totalSeconds));
    const m = Math.floor(s / 60);
    return m ? units.format([minutes.format(m), seconds.format(s % 60)]) : seconds.format(s);
  }

  // decimals written in a decimal string ("-12.50": 2), so nothing said is rounded away
  function decimals(amount) {
    const dot = amount.indexOf(".");
    return dot < 0 ? 0 : amount.length - dot - 1;
  }

  // A decimal string with its ISO 4217 code ("-12.50", "CNY"); no code: the plain number and
  // a note. Anything that is not a number comes back as it was, as text.
  function money(amount, currency) {
    const text = String(amount);
    const value = Number(text);
    if (text.trim() === "" || !Number.isFinite(value)) return text;
    const shown = Math.min(20, decimals(text));
    if (!currency) {
      const plain = new Intl.NumberFormat(undefined, { minimumFractionDigits: shown, maximumFractionDigits: shown });
      return `${plain.format(value)} ${NO_CURRENCY}`;
    }
    try {
      const usual = new Intl.NumberFormat(undefined, { style: "currency", currency }).resolvedOptions();
      const digits = Math.max(usual.minimumFractionDigits, shown);
      return new Intl.NumberFormat(undefined, {
        style: "currency",
        currency,
        minimumFractionDigits: usual.minimumFractionDigits,
        maximumFractionDigits: digits,
      }).format(value);
    } catch (e) {
      return `${new Intl.NumberFormat().format(value)} ${currency}`; // not a code Intl knows
    }
  }

  const number = (value) => new Intl.NumberFormat().format(value);

  // Every server-rendered time and amount under root, in this browser's locale and zone.
  function apply(root) {
    for (const node of root.querySelectorAll("time[datetime]")) {
      node.textContent = when(node.getAttribute("datetime"));
    }
    for (const node of root.querySelectorAll("[data-amount][data-currency]")) {
      node.textContent = money(node.dataset.amount, node.dataset.currency);
    }
  }

  apply(document); // deferred: the page is parsed
  return { when, day, time, clock, duration, money, number, apply };
})();
