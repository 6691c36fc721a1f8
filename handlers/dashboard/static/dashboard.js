/* The dashboard's only script (no inline script is allowed: Content-Security-Policy).
   On the overview, refreshes every [data-field] from /admin/overview.json every few seconds,
   without reloading the page; a failed fetch says "connection lost" instead of leaving stale
   figures looking current. */
(function () {
  "use strict";

  function pick(data, path) {
    return path.split(".").reduce(function (value, key) {
      return value !== null && value !== undefined ? value[key] : undefined;
    }, data);
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds || 0));
    if (seconds < 60) { return seconds + "s"; }
    var minutes = Math.floor(seconds / 60);
    var days = Math.floor(minutes / 1440);
    var hours = Math.floor((minutes % 1440) / 60);
    var mins = minutes % 60;
    if (days) { return days + "d " + hours + "h"; }
    if (hours) { return hours + "h " + mins + "m"; }
    return mins + "m";
  }

  function time(iso, zone) {
    var date = new Date(iso);
    if (isNaN(date.getTime())) { return "-"; }
    try {
      // sv-SE writes 2026-01-31 14:05, the format the server renders.
      return new Intl.DateTimeFormat("sv-SE", {
        timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit"
      }).format(date);
    } catch (e) {
      return iso;
    }
  }

  function show(element, value, zone) {
    var kind = element.getAttribute("data-kind");
    if (value === undefined) { return; }
    if (kind === "status") {
      element.textContent = element.getAttribute("data-" + value) || value;
      element.className = "status status-" + value;
    } else if (kind === "duration") {
      element.textContent = duration(value);
    } else if (kind === "time") {
      element.textContent = time(value, zone);
    } else if (kind === "yesno") {
      element.textContent = element.getAttribute(value ? "data-yes" : "data-no");
    } else if (kind === "circuit") {
      element.textContent = value;
      element.className = "circuit-" + value;
    } else {
      element.textContent = value === null ? "-" : String(value);
    }
  }

  function list(element, items) {
    while (element.firstChild) { element.removeChild(element.firstChild); }
    if (!items || items.length === 0) {
      var empty = document.createElement("li");
      empty.className = "muted";
      empty.textContent = element.getAttribute("data-empty");
      element.appendChild(empty);
      return;
    }
    items.forEach(function (text) {
      var item = document.createElement("li");
      item.textContent = text;
      element.appendChild(item);
    });
  }

  function live(root) {
    var source = root.getAttribute("data-source");
    var every = Number(root.getAttribute("data-refresh")) || 10;
    var zone = root.getAttribute("data-timezone") || "UTC";
    var badge = document.getElementById("live");

    function state(name) {
      if (!badge) { return; }
      badge.textContent = badge.getAttribute("data-" + name);
      badge.className = "live live-" + name;
    }

    function refresh() {
      fetch(source, {credentials: "same-origin", cache: "no-store",
                     headers: {"Accept": "application/json"}})
        .then(function (response) {
          if (response.status === 401) { throw new Error("signed-out"); }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        })
        .then(function (data) {
          root.querySelectorAll("[data-field]").forEach(function (element) {
            show(element, pick(data, element.getAttribute("data-field")), zone);
          });
          root.querySelectorAll("[data-list]").forEach(function (element) {
            list(element, pick(data, element.getAttribute("data-list")));
          });
          root.setAttribute("data-updated", String(Date.now()));
          state("ok");
        })
        .catch(function (error) {
          state(error && error.message === "signed-out" ? "signed-out" : "lost");
        });
    }

    window.setInterval(refresh, every * 1000);
  }

  function confirmations() {
    // <form data-confirm="question"> asks before it is sent (no inline handlers allowed).
    document.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var root = document.getElementById("overview");
    if (root) { live(root); }
    confirmations();
  });
}());
