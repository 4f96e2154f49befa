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

  // Zoom and pan of a case image with its saliency overlay (one transform for both: they stay aligned). The
  // page loads the WADO-RS rendering at viewport size; the first zoom in swaps in the full resolution.
  var ZOOM_STEP = 1.5, ZOOM_MAX = 8, PAN_STEP = 40;
  function wireZoom(controls) {
    var frame = document.getElementById(controls.dataset.frame);
    var stack = frame.querySelector(".stack"), image = frame.querySelector("img.image");
    var level = controls.querySelector(".zoom-level");
    var state = { scale: 1, x: 0, y: 0 };
    frame.tabIndex = 0;
    frame.setAttribute("role", "group");
    frame.setAttribute("aria-label", "Image: drag or use the arrow keys to pan");
    function apply() {
      var maxX = frame.clientWidth * (state.scale - 1), maxY = frame.clientHeight * (state.scale - 1);
      state.x = Math.min(0, Math.max(-maxX, state.x));
      state.y = Math.min(0, Math.max(-maxY, state.y));
      stack.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.scale + ")";
      level.textContent = Math.round(state.scale * 100) + "%";
    }
    function zoom(factor) {
      var next = Math.min(ZOOM_MAX, Math.max(1, state.scale * factor));
      var cx = frame.clientWidth / 2, cy = frame.clientHeight / 2;  // keep the centre of the view in place
      state.x = cx - (cx - state.x) * next / state.scale;
      state.y = cy - (cy - state.y) * next / state.scale;
      state.scale = next;
      if (next > 1 && image.dataset.full && image.getAttribute("src") !== image.dataset.full) {
        image.src = image.dataset.full;  // full resolution on demand
      }
      apply();
    }
    controls.querySelector(".zoom-in").addEventListener("click", function () { zoom(ZOOM_STEP); });
    controls.querySelector(".zoom-out").addEventListener("click", function () { zoom(1 / ZOOM_STEP); });
    controls.querySelector(".zoom-reset").addEventListener("click", function () { zoom(1 / state.scale); });
    frame.addEventListener("keydown", function (event) {
      var moves = { ArrowLeft: [PAN_STEP, 0], ArrowRight: [-PAN_STEP, 0], ArrowUp: [0, PAN_STEP], ArrowDown: [0, -PAN_STEP] };
      if (moves[event.key]) {
        event.preventDefault();
        state.x += moves[event.key][0]; state.y += moves[event.key][1]; apply();
      } else if (event.key === "+" || event.key === "=") { zoom(ZOOM_STEP); }
      else if (event.key === "-") { zoom(1 / ZOOM_STEP); }
      else if (event.key === "0") { zoom(1 / state.scale); }
    });
    var drag = null;
    frame.addEventListener("pointerdown", function (event) {
      drag = { x: event.clientX - state.x, y: event.clientY - state.y };
      frame.setPointerCapture(event.pointerId);
    });
    frame.addEventListener("pointermove", function (event) {
      if (drag) { state.x = event.clientX - drag.x; state.y = event.clientY - drag.y; apply(); }
    });
    frame.addEventListener("pointerup", function () { drag = null; });
    frame.addEventListener("wheel", function (event) {
      if (!event.ctrlKey) { return; }  // ctrl + wheel zooms; the plain wheel scrolls the page
      event.preventDefault();
      zoom(event.deltaY < 0 ? ZOOM_STEP : 1 / ZOOM_STEP);
    }, { passive: false });
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
    source.addEventListener("replaced", function () { source.close(); });  // a newer page follows the list
    source.addEventListener("error", function () { lost = true; });
    source.addEventListener("open", function () {
      document.body.dataset.live = "on";
      if (lost) { lost = false; refresh(); }  // changes while the stream was down
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireOverlays();
    document.querySelectorAll(".zoom[data-frame]").forEach(wireZoom);
    document.addEventListener("keydown", shortcuts);
    followWorklist();
  });
})();
