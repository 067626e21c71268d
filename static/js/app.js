// Durable Chat page behaviour, on top of htmx and its SSE extension. No build step.
(function () {
  "use strict";

  // --- the stream cursor ---------------------------------------------------------------------
  // The SSE extension re-creates its EventSource after an error *without* Last-Event-ID, reading
  // the URL from `sse-connect` again. So the page carries its cursor in that URL, updated on
  // every event: any reconnect, by the browser or by the extension, resumes where we left off.
  function moveCursor(element, eventId) {
    var source = element.closest("[sse-connect]");
    if (!source || !eventId) return;
    var url = new URL(source.getAttribute("sse-connect"), window.location.href);
    url.searchParams.set("lastEventId", eventId);
    source.setAttribute("sse-connect", url.pathname + url.search);
  }

  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    moveCursor(evt.target, evt.detail && evt.detail.lastEventId);
  });

  // --- resume toast --------------------------------------------------------------------------
  function toast(text, kind) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var item = document.createElement("div");
    item.className = "toast toast-" + (kind || "info");
    item.setAttribute("role", "status");
    item.textContent = text;
    box.appendChild(item);
    setTimeout(function () { item.remove(); }, 4000);
  }

  document.addEventListener("htmx:sseOpen", function (evt) {
    var element = evt.target;
    if (element.dataset.resume === "true" || element.dataset.dropped === "true") {
      toast("Reconnected – continuing stream…");
    }
    element.dataset.resume = "false";
    element.dataset.dropped = "false";
  });

  document.addEventListener("htmx:sseError", function (evt) {
    evt.target.dataset.dropped = "true";
  });

  // --- composer ------------------------------------------------------------------------------
  function streaming() {
    return document.querySelector(".message.status-streaming") !== null;
  }

  function refreshComposer() {
    var composer = document.getElementById("composer");
    if (!composer) return;
    var live = streaming();
    composer.classList.toggle("is-streaming", live);
    composer.querySelector("button.send").disabled = live;
  }

  document.addEventListener("keydown", function (evt) {
    if (evt.target.id !== "message-input" || evt.key !== "Enter" || evt.shiftKey || evt.isComposing) return;
    evt.preventDefault();
    var form = evt.target.form;
    if (!streaming() && evt.target.value.trim()) form.requestSubmit(form.querySelector("button.send"));
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var form = evt.detail.elt;
    if (form.id === "composer" && evt.detail.successful && evt.detail.requestConfig.verb === "post" &&
        !(evt.detail.requestConfig.path || "").endsWith("/stop")) {
      form.reset();
      var input = document.getElementById("message-input");
      if (input) input.focus();
      var empty = document.querySelector(".empty-chat");
      if (empty) empty.remove();
    }
  });

  // --- copy buttons --------------------------------------------------------------------------
  function enableCopy(root) {
    root.querySelectorAll("button.copy[hidden]").forEach(function (button) {
      if (navigator.clipboard) button.hidden = false;
    });
  }

  // One copy button per fenced code block (the server renders them inside div.code-block).
  function addCodeCopy(root) {
    if (!navigator.clipboard) return;
    root.querySelectorAll(".code-block").forEach(function (block) {
      if (block.querySelector("button.copy-code")) return;
      var button = document.createElement("button");
      button.type = "button";
      button.className = "copy copy-code";
      button.textContent = "Copy";
      button.setAttribute("aria-label", "Copy this code");
      block.appendChild(button);
    });
  }

  document.addEventListener("click", function (evt) {
    var button = evt.target.closest("button.copy");
    if (!button) return;
    var code = button.classList.contains("copy-code") ? button.parentNode.querySelector("pre").textContent : null;
    navigator.clipboard.writeText(code !== null ? code : button.dataset.copy || "").then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 1500);
    });
  });

  function settle(root) {
    refreshComposer();
    enableCopy(root || document);
    addCodeCopy(root || document);
    var list = document.getElementById("messages");
    if (list) list.scrollTop = list.scrollHeight;
  }

  document.addEventListener("htmx:load", function (evt) { settle(evt.target); });
  document.addEventListener("htmx:sseMessage", function () {
    var list = document.getElementById("messages");
    if (list) list.scrollTop = list.scrollHeight;
  });
  document.addEventListener("DOMContentLoaded", function () { settle(document); });

  // --- hidden tabs -----------------------------------------------------------------------------
  // Over HTTP/1.1 a browser opens at most six connections to a host, and each streaming reply
  // holds one: a hidden tab lets go of its streams (the message is swapped for a copy without
  // sse-connect, which closes its EventSource) and opens them again, from the cursor, once shown.
  function swapStream(element, from, to) {
    var copy = element.cloneNode(true);
    copy.setAttribute(to, element.getAttribute(from));
    copy.removeAttribute(from);
    copy.setAttribute("data-resume", "true");
    htmx.swap(element, copy.outerHTML, { swapStyle: "outerHTML" });
  }

  document.addEventListener("visibilitychange", function () {
    var from = document.hidden ? "sse-connect" : "data-paused-stream";
    var to = document.hidden ? "data-paused-stream" : "sse-connect";
    document.querySelectorAll(".message.status-streaming[" + from + "]").forEach(function (element) {
      swapStream(element, from, to);
    });
  });

  // --- theme -----------------------------------------------------------------------------------
  // Light or dark follows the system until the person chooses; the choice is a cookie, so the
  // server renders it into <html data-theme> on the next page (no flash, no inline script).
  var toggle = document.getElementById("theme-toggle");
  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      var root = document.documentElement;
      var dark = root.dataset.theme ? root.dataset.theme === "dark"
        : window.matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      document.cookie = "theme=" + root.dataset.theme + "; path=/; max-age=31536000; samesite=lax";
    });
  }
})();
