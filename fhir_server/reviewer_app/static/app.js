// DermBridge reviewer app: the saliency overlay's switch and opacity, keyboard shortcuts, and a bounded
// refresh of the worklist. No data leaves the page; no token is kept (the session cookie is HttpOnly).
"use strict";
(function () {
  function overlayOf(control) { return document.getElementById(control.dataset.overlay); }

  function wireOverlays() {
    document.querySelectorAll(".overlay-toggle").forEach(function (box) {
      box.addEventListener("change", function () { overlayOf(box).classList.toggle("off", !box.checked); });
    });
    document.querySelectorAll(".overlay-opacity").forEach(function (slider) {
      var apply = function () { overlayOf(slider).style.opacity = String(slider.value / 100); };
      slider.addEventListener("input", apply);
      apply();
    });
  }

  function typing(target) {
    return target && (target.tagName === "INPUT" || target.tagName === "SELECT" || target.tagName === "TEXTAREA");
  }

  function shortcuts(event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var form = document.getElementById("decide");
      if (form) { event.preventDefault(); form.requestSubmit(); }
      return;
    }
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "o") {
      var box = document.querySelector(".overlay-toggle");
      if (box) { box.click(); }
    } else if (event.key === "c") {
      var claim = document.getElementById("claim");
      if (claim) { claim.click(); }
    }
  }

  var POLL_MS = 30000;  // the worklist refreshes every 30 s while it is shown (bounded: one request at a time)
  function pollWorklist() {
    var table = document.querySelector("[data-poll]") || document.getElementById("empty");
    if (!table) { return; }
    var busy = false;
    window.setInterval(function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) { return; }
          var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
          var main = document.getElementById("main");
          if (fresh && main && !main.contains(document.activeElement)) { main.replaceWith(fresh); }
        })
        .catch(function () {})
        .then(function () { busy = false; });
    }, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireOverlays();
    document.addEventListener("keydown", shortcuts);
    pollWorklist();
  });
})();
