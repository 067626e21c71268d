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

  // Only when a live connection actually dropped and came back: a page that opens its stream
  // (a reload, a return to the chat, Regenerate) says nothing.
  document.addEventListener("htmx:sseOpen", function (evt) {
    var element = evt.target;
    if (element.dataset.dropped === "true") toast("Reconnected – continuing the reply where it was.");
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

  // Enter sends an edited message too (Shift+Enter: a new line), as it does in the composer.
  document.addEventListener("keydown", function (evt) {
    var edit = evt.target.closest && evt.target.closest(".edit-message form");
    if (!edit || evt.target.tagName !== "TEXTAREA" || evt.key !== "Enter" || evt.shiftKey || evt.isComposing) return;
    evt.preventDefault();
    if (evt.target.checkValidity()) edit.requestSubmit();
  });

  // Cancel closes the edit box where it is (without JavaScript it is a link back to the chat).
  document.addEventListener("click", function (evt) {
    var cancel = evt.target.closest(".cancel-edit");
    if (!cancel) return;
    evt.preventDefault();
    var box = cancel.closest("details");
    if (box) box.open = false;
    focusComposer();
  });

  document.addEventListener("keydown", function (evt) {
    if (evt.target.id !== "message-input" || evt.key !== "Enter" || evt.shiftKey || evt.isComposing) return;
    evt.preventDefault();
    var form = evt.target.form;
    if (!evt.target.checkValidity()) { evt.target.reportValidity(); return; }
    if (!streaming() && evt.target.value.trim()) form.requestSubmit(form.querySelector("button.send"));
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    if ((evt.detail.requestConfig.path || "").endsWith("/stop")) {
      var composerInput = document.getElementById("message-input");
      if (composerInput) composerInput.focus();
    }
    var form = evt.detail.elt;
    if (form.id === "composer" && evt.detail.successful && evt.detail.requestConfig.verb === "post" &&
        !(evt.detail.requestConfig.path || "").endsWith("/stop")) {
      form.reset();
      var input = document.getElementById("message-input");
      var counter = document.getElementById("message-count");
      if (counter) counter.hidden = true;
      following = true;
      if (input) input.focus();
      var empty = document.querySelector(".empty-chat");
      if (empty) empty.remove();
    }
  });

  // --- attachments -------------------------------------------------------------------------
  // The composer's file input is the one source of what is sent (htmx posts the form as
  // multipart, and so does the form without JavaScript). Dropping, pasting and picking again
  // add to it; each file gets a preview with a Remove button before sending.
  var picked = [];

  function showPicked() {
    var input = document.getElementById("attach-input");
    var list = document.getElementById("attachment-previews");
    if (!input || !list) return;
    var transfer = new DataTransfer();
    picked.forEach(function (file) { transfer.items.add(file); });
    input.files = transfer.files;
    list.querySelectorAll("img").forEach(function (img) { URL.revokeObjectURL(img.src); });
    list.replaceChildren();
    picked.forEach(function (file, index) {
      var item = document.createElement("li");
      if (file.type.indexOf("image/") === 0) {
        var img = document.createElement("img");
        img.src = URL.createObjectURL(file);
        img.alt = "";
        item.appendChild(img);
      }
      var name = document.createElement("span");
      name.className = "attachment-name";
      name.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1000)) + " kB)";
      item.appendChild(name);
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove-attachment";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + file.name);
      remove.addEventListener("click", function () {
        picked.splice(index, 1);
        showPicked();
        document.getElementById("message-input").focus();
      });
      item.appendChild(remove);
      list.appendChild(item);
    });
    list.hidden = picked.length === 0;
  }

  function addFiles(files) {
    if (!document.getElementById("attach-input")) return false;
    Array.prototype.forEach.call(files, function (file) { picked.push(file); });
    showPicked();
    return files.length > 0;
  }

  document.addEventListener("change", function (evt) {
    if (evt.target.id !== "attach-input") return;
    var chosen = Array.prototype.slice.call(evt.target.files);
    picked = picked.concat(chosen.filter(function (file) { return picked.indexOf(file) < 0; }));
    showPicked();
  });

  document.addEventListener("dragover", function (evt) {
    var composer = evt.target.closest && evt.target.closest("#composer");
    if (!composer || !evt.dataTransfer || Array.prototype.indexOf.call(evt.dataTransfer.types, "Files") < 0) return;
    evt.preventDefault();
    composer.classList.add("dropping");
  });

  document.addEventListener("dragleave", function (evt) {
    var composer = evt.target.closest && evt.target.closest("#composer");
    if (composer && !composer.contains(evt.relatedTarget)) composer.classList.remove("dropping");
  });

  document.addEventListener("drop", function (evt) {
    var composer = evt.target.closest && evt.target.closest("#composer");
    if (!composer || !evt.dataTransfer || !evt.dataTransfer.files.length) return;
    evt.preventDefault();
    composer.classList.remove("dropping");
    addFiles(evt.dataTransfer.files);
  });

  document.addEventListener("paste", function (evt) {
    if (evt.target.id !== "message-input" || !evt.clipboardData || !evt.clipboardData.files.length) return;
    if (addFiles(evt.clipboardData.files)) evt.preventDefault();
  });

  document.addEventListener("reset", function (evt) {
    if (evt.target.id !== "composer") return;
    picked = [];
    setTimeout(showPicked);  // after the reset has emptied the input itself
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

  // --- following the reply ---------------------------------------------------------------------
  // The view follows a streaming reply only while the reader is at the bottom. Once they scroll
  // up it stays where they put it, and "↓ Latest" takes them back down.
  var following = true;

  function messageList() { return document.getElementById("messages"); }

  function atBottom(list) { return list.scrollHeight - list.scrollTop - list.clientHeight < 48; }

  function showLatestButton(show) {
    var button = document.getElementById("to-latest");
    if (button) button.hidden = !show;
  }

  function follow() {
    var list = messageList();
    if (!list) return;
    if (following) list.scrollTop = list.scrollHeight;
    else showLatestButton(!atBottom(list));
  }

  // A person scrolling up (wheel, touch, keys) stops the following at once, before the next
  // chunk could scroll them back down; reaching the bottom again, by any means, resumes it.
  function leaveBottom() {
    var list = messageList();
    if (!list || list.scrollHeight <= list.clientHeight) return;
    following = false;
  }

  document.addEventListener("wheel", function (evt) {
    if (evt.deltaY < 0 && evt.target.closest && evt.target.closest("#messages")) leaveBottom();
  }, { passive: true });
  document.addEventListener("touchmove", function (evt) {
    if (evt.target.closest && evt.target.closest("#messages")) leaveBottom();
  }, { passive: true });
  document.addEventListener("keydown", function (evt) {
    if (["PageUp", "ArrowUp", "Home"].indexOf(evt.key) >= 0 && evt.target.closest && evt.target.closest("#messages")) {
      leaveBottom();
    }
  });

  var lastTop = 0;
  document.addEventListener("scroll", function (evt) {
    var list = messageList();
    if (evt.target !== list) return;
    var down = list.scrollTop >= lastTop;  // an animated scroll up passes near the bottom first
    lastTop = list.scrollTop;
    if (atBottom(list) && down) {
      following = true;
      showLatestButton(false);
    } else if (!following) {
      showLatestButton(true);
    }
  }, true);

  document.addEventListener("click", function (evt) {
    if (!evt.target.closest("#to-latest")) return;
    following = true;
    showLatestButton(false);
    follow();
  });

  function settle(root) {
    refreshComposer();
    enableCopy(root || document);
    addCodeCopy(root || document);
    follow();
  }

  document.addEventListener("htmx:load", function (evt) { settle(evt.target); });
  document.addEventListener("htmx:sseMessage", follow);
  document.addEventListener("htmx:afterSettle", follow);  // what a chunk swapped in, laid out
  document.addEventListener("DOMContentLoaded", function () {
    settle(document);
    focusComposer();
  });

  // --- focus -----------------------------------------------------------------------------------
  // The composer has the focus when a chat opens and after Stop, Regenerate or Edit (each ends
  // on the chat page again, or swaps the reply in place), so typing goes on where it was.
  function focusComposer() {
    var input = document.getElementById("message-input");
    if (input && document.activeElement === document.body) input.focus({ preventScroll: true });
  }

  document.addEventListener("htmx:afterSettle", focusComposer);

  // --- the message's length ----------------------------------------------------------------------
  // A counter once the message nears the limit; past it, Send is refused with a sentence (the
  // server refuses too) instead of the text being cut short.
  document.addEventListener("input", function (evt) {
    if (evt.target.id !== "message-input") return;
    var input = evt.target, limit = parseInt(input.dataset.limit, 10);
    var counter = document.getElementById("message-count");
    if (!counter || !limit) return;
    var length = input.value.length;
    counter.hidden = length < limit * 0.8;
    counter.textContent = length.toLocaleString() + " / " + limit.toLocaleString();
    counter.classList.toggle("over", length > limit);
    input.setCustomValidity(length > limit ? "This message is " + (length - limit).toLocaleString() +
      " characters over the limit of " + limit.toLocaleString() + "; shorten it to send." : "");
  });

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
  // --- announcements --------------------------------------------------------------------------
  // A screen reader hears that a reply started and that it ended, once each, not every token.
  function announce(text) {
    var box = document.getElementById("announcer");
    if (!box) return;
    box.textContent = "";
    setTimeout(function () { box.textContent = text; }, 50);
  }

  document.addEventListener("htmx:sseOpen", function (evt) {
    var who = evt.target.querySelector(".who");
    if (evt.target.dataset.announced !== "true") {
      evt.target.dataset.announced = "true";
      announce((who ? who.textContent : "The agent") + " is replying.");
    }
  });

  document.addEventListener("htmx:load", function (evt) {
    var message = evt.target.closest && evt.target.closest(".message.assistant");
    if (!message || message !== evt.target || message.classList.contains("status-streaming")) return;
    var ended = {"status-complete": "The reply is finished.", "status-cancelled": "The reply was stopped.",
                 "status-interrupted": "The reply was interrupted.", "status-error": "The reply failed."};
    Object.keys(ended).forEach(function (status) {
      if (message.classList.contains(status)) announce(ended[status]);
    });
  });

  // A tool call is announced once when it starts, and once if it waits for the person's answer
  // (its block is swapped in again as it changes: the announced states are kept per call).
  var toolsAnnounced = {};
  document.addEventListener("htmx:load", function (evt) {
    var blocks = evt.target.matches && evt.target.matches(".tool-call") ? [evt.target]
      : Array.prototype.slice.call(evt.target.querySelectorAll ? evt.target.querySelectorAll(".tool-call") : []);
    blocks.forEach(function (block) {
      if (!block.closest(".message.status-streaming") || block.classList.contains("tool-writing")) return;
      var name = (block.querySelector(".tool-name") || {}).textContent || "a tool";
      var state = block.classList.contains("tool-waiting") ? "waiting" : "called";
      var key = block.id + ":" + state;
      if (toolsAnnounced[key]) return;
      toolsAnnounced[key] = true;
      announce(state === "waiting" ? "The agent asks to run " + name + ": approve or deny."
                                   : "The agent is calling " + name + ".");
    });
  });

  // --- keyboard shortcuts ----------------------------------------------------------------------
  // The map people know from other chat apps; `?` lists it. Letters never fire while typing in
  // a field; Esc (stop) and Shift+Esc (the message box) do, as they are meant to.
  function typing(target) {
    return target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName);
  }

  function last(selector) {
    var all = document.querySelectorAll(selector);
    return all.length ? all[all.length - 1] : null;
  }

  var shortcuts = {
    "n": function () { var link = document.querySelector("a.new-chat"); if (link) link.click(); },
    "/": function () {
      var search = document.getElementById(window.matchMedia("(max-width: 760px)").matches ? "search-drawer" : "search-sidebar");
      var drawer = document.querySelector(".drawer");
      if (search && drawer && search.id === "search-drawer") drawer.open = true;
      if (search) search.focus();
    },
    "r": function () { var button = last(".message.assistant form.regenerate button"); if (button) button.click(); },
    "e": function () {
      var box = last(".message.user details.edit-message");
      if (!box) return;
      box.open = true;
      var field = box.querySelector("textarea");
      if (field) { field.focus(); field.setSelectionRange(field.value.length, field.value.length); }
    },
    "t": function () { var button = document.getElementById("theme-toggle"); if (button) button.click(); },
    "c": function () { var button = last(".message.assistant button.copy:not(.copy-code)"); if (button) button.click(); },
    "?": function () { var dialog = document.getElementById("shortcuts"); if (dialog && !dialog.open) dialog.showModal(); }
  };

  document.addEventListener("keydown", function (evt) {
    if (evt.defaultPrevented || evt.isComposing) return;
    if (evt.key === "Escape" && evt.shiftKey) {
      var input = document.getElementById("message-input");
      if (input) { evt.preventDefault(); input.focus(); }
      return;
    }
    if (evt.key === "Escape") {
      // Whenever a reply is being written (the composer's own look may not have caught up yet).
      var stop = document.querySelector("#composer button.stop");
      if (stop && streaming() && !document.querySelector("dialog[open]")) { evt.preventDefault(); stop.click(); }
      return;
    }
    if (evt.ctrlKey || evt.metaKey || evt.altKey || typing(evt.target)) return;
    var action = shortcuts[evt.key];
    if (action) { evt.preventDefault(); action(); }
  });
})();
