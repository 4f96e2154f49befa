// DermBridge reviewer app: the saliency overlay's switch and opacity, keyboard shortcuts, and the live
// worklist. No data leaves the page; no token is kept (the session cookie is HttpOnly).
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

  // The worklist follows the server's change events (/app/events, server-sent events, session cookie): on each,
  // the page is fetched again as the signed-in person and its main part replaced (one fetch at a time; a
  // change during a fetch fetches once more). Not while the reviewer is using a control of the list.
  function refresher() {
    var busy = false, again = false;
    function refresh() {
      if (busy) { again = true; return; }
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
        .then(function () { busy = false; if (again) { again = false; refresh(); } });
    }
    return refresh;
  }

  function followWorklist() {
    if (!document.querySelector("[data-poll]") && !document.getElementById("empty")) { return; }
    if (!window.EventSource) { return; }
    var refresh = refresher();
    var source = new EventSource("/app/events");
    var lost = false;
    source.addEventListener("worklist", refresh);
    source.addEventListener("ended", function () { source.close(); window.location.reload(); });
    source.addEventListener("error", function () { lost = true; });
    source.addEventListener("open", function () {
      document.body.dataset.live = "on";
      if (lost) { lost = false; refresh(); }  // changes while the stream was down
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireOverlays();
    document.addEventListener("keydown", shortcuts);
    followWorklist();
  });
})();
