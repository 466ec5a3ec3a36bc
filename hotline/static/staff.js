/* Staff pages. Everything works without this file; it adds the copy button, the claim
   heartbeat, the safe view's messages (a changed file, why a view failed), unblur and
   zoom in the safe view, and the keyboard for assessing.
   No request goes anywhere but this site. */
(function () {
  "use strict";
  var main = document.getElementById("main");
  var csrf = main ? main.getAttribute("data-csrf") : "";

  // Copy the canonical URL as text (never opened here).
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (source && navigator.clipboard) {
        navigator.clipboard.writeText(source.textContent.trim());
        button.setAttribute("data-copied", "true");
      }
    });
  });

  // Keep the claim while the page is open: renew at a third of the lease.
  var claim = document.getElementById("claim-bar");
  if (claim) {
    var lease = parseInt(claim.getAttribute("data-lease"), 10) || 900;
    var renew = function () {
      fetch(claim.getAttribute("data-renew"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf }
      }).then(function (response) {
        var state = document.getElementById("claim-state");
        if (!response.ok && state) {
          state.textContent = claim.getAttribute("data-lost") || "!";
        }
      });
    };
    window.setInterval(renew, Math.max(30, lease / 3) * 1000);
  }

  // Safe view: the page fetches each view itself, so that it can say what the server
  // said of it: the file changed since it was hashed (X-Hotline-Content), or why it
  // cannot be shown (X-Hotline-Reason). The picture lives in this page's memory only.
  var texts = document.getElementById("media-list");
  function text(name) {
    return (texts && texts.getAttribute("data-" + name)) || "";
  }
  var GONE = /^(http_error_404|http_error_410|inline_gone|no_such_frame)$/;
  function whyNot(status, reason) {
    if (status === 401) {
      return text("signed-out");
    }
    if (status === 403) {
      return text("forbidden");
    }
    if (status === 429) {
      return text("limited");
    }
    if (!status) {
      return text("offline");
    }
    var kind = "failed";
    if (GONE.test(reason)) {
      kind = "gone";
    } else if (/^(timeout|connect_error|dns_error|tls_error|http_error_5\d\d)$/.test(reason)) {
      kind = "unreachable";
    } else if (/^(not_media|decode_error|image_too_large|too_large)$/.test(reason)) {
      kind = "unviewable";
    }
    return text(kind) + (reason ? " (" + reason + ")" : "");
  }
  function say(img, message, retry) {
    var status = img.parentNode.querySelector(".view-status");
    if (!status) {
      return;
    }
    status.textContent = message;
    status.classList.toggle("shown", Boolean(message));
    if (retry) {
      var again = document.createElement("button");
      again.type = "button";
      again.className = "secondary small";
      again.textContent = text("retry");
      again.addEventListener("click", function () {
        // The button goes with the message: the card keeps the focus meanwhile.
        var index = cards.indexOf(img.closest(".media-card"));
        if (index >= 0) {
          focusCard(index);
        }
        show(img, retry);
      });
      status.appendChild(document.createTextNode(" "));
      status.appendChild(again);
    }
  }
  function busy(img, on) {
    img.parentNode.setAttribute("aria-busy", on ? "true" : "false");
  }
  // Nothing shown, and why; "Try again" unless trying again cannot help.
  function failed(img, status, reason, url) {
    busy(img, false);
    img.setAttribute("data-failed", reason || String(status));
    img.removeAttribute("data-view");
    img.hidden = true;
    var hopeless = GONE.test(reason) || reason === "decode_error" || status === 401 || status === 403;
    say(img, whyNot(status, reason), hopeless ? "" : url);
  }
  // Of two requests for one image (a blurred view still coming when the analyst
  // unblurs), only the later one's answer is shown.
  function nextRequest(img) {
    var number = (parseInt(img.getAttribute("data-request"), 10) || 0) + 1;
    img.setAttribute("data-request", String(number));
    return String(number);
  }
  function show(img, url) {
    var mine = nextRequest(img);
    var current = function () {
      return img.getAttribute("data-request") === mine;
    };
    say(img, "");
    busy(img, true);
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!current()) {
          return null;
        }
        if (!response.ok) {
          failed(img, response.status, response.headers.get("X-Hotline-Reason") || "", url);
          return null;
        }
        var changed = response.headers.get("X-Hotline-Content") === "changed";
        var view = response.headers.get("X-Hotline-View") || "";
        return response.blob().then(function (blob) {
          if (!current()) {
            return;
          }
          var address = URL.createObjectURL(blob);
          img.onload = function () {
            URL.revokeObjectURL(address);
            if (current()) {
              busy(img, false);
              img.setAttribute("data-view", view); // what is shown now
            }
          };
          img.onerror = function () {
            URL.revokeObjectURL(address);
            if (current()) {
              failed(img, 200, "decode_error", url);
            }
          };
          img.src = address;
          img.hidden = false;
          img.removeAttribute("data-failed");
          img.setAttribute("data-content", changed ? "changed" : "same");
          say(img, changed ? text("changed") : "");
        });
      })
      .catch(function () {
        if (current()) {
          failed(img, 0, "", url);
        }
      });
  }
  var waiting = Array.prototype.slice.call(
    document.querySelectorAll(".safe-view img[data-src]:not([data-deferred])")
  );
  if ("IntersectionObserver" in window) {
    // Fetched when near the screen, as the browser's own lazy loading would.
    var watcher = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        var img = entry.target;
        // (Unless the analyst unblurred it before it came into view.)
        if (entry.isIntersecting) {
          watcher.unobserve(img);
          if (!img.hasAttribute("data-request")) {
            show(img, img.getAttribute("data-src"));
          }
        }
      });
    }, { rootMargin: "400px" });
    waiting.forEach(function (img) {
      watcher.observe(img);
    });
  } else {
    waiting.forEach(function (img) {
      show(img, img.getAttribute("data-src"));
    });
  }

  // Unblur one item on request (the server audits it), zoom on click.
  function unblur(card) {
    var img = card && card.querySelector(".safe-view img");
    // Only where the page offers it (the role may unblur), and once.
    if (!img || !card.querySelector("[data-unblur]") || img.getAttribute("data-state") === "unblurred") {
      return;
    }
    var blurred = card.querySelector("[data-show]");
    if (blurred) {
      blurred.hidden = true; // asking for the blurred view now would undo the unblur
    }
    if (img.getAttribute("data-kind") === "video") {
      // A video plays in a player, never with sound unless the analyst turns it on.
      var video = document.createElement("video");
      video.muted = true;
      video.controls = true;
      video.preload = "metadata";
      video.src = img.getAttribute("data-unblurred");
      video.setAttribute("aria-label", img.getAttribute("data-alt-unblurred") || "");
      video.setAttribute("data-state", "unblurred");
      img.setAttribute("data-state", "unblurred");
      nextRequest(img); // a placeholder still coming is not shown
      busy(img, false);
      if (img.getAttribute("data-content") !== "changed") {
        say(img, ""); // but a changed file stays said: the player shows it
      }
      img.hidden = true;
      img.parentNode.insertBefore(video, img);
      return;
    }
    img.setAttribute("data-state", "unblurred");
    img.alt = img.getAttribute("data-alt-unblurred") || img.alt;
    show(img, img.getAttribute("data-unblurred"));
  }
  document.querySelectorAll("[data-unblur]").forEach(function (button) {
    button.addEventListener("click", function () {
      unblur(document.getElementById("media-" + button.getAttribute("data-unblur")));
    });
  });
  document.querySelectorAll("[data-show]").forEach(function (button) {
    button.addEventListener("click", function () {
      var img = document.querySelector("#media-" + button.getAttribute("data-show") + " .safe-view img");
      if (img) {
        show(img, img.getAttribute("data-src"));
        button.hidden = true;
      }
    });
  });
  document.querySelectorAll(".safe-view img").forEach(function (img) {
    img.addEventListener("click", function () {
      img.parentNode.classList.toggle("zoomed");
    });
  });
  document.querySelectorAll("video").forEach(function (video) {
    video.muted = true;
  });

  // Keyboard assessment: j/k move between items, 1-5 classify the current one,
  // u unblurs it, s submits the form. Typing in a field is never intercepted.
  var cards = Array.prototype.slice.call(document.querySelectorAll(".media-card"));
  var current = -1;
  function focusCard(index) {
    if (!cards.length) {
      return;
    }
    current = Math.max(0, Math.min(cards.length - 1, index));
    cards.forEach(function (card, i) {
      card.classList.toggle("current", i === current);
    });
    cards[current].focus();
    cards[current].scrollIntoView({ block: "nearest" });
  }
  function showDetails(card) {
    var checked = card.querySelector("input[type=radio][data-class]:checked");
    var details = card.querySelector(".illegal-details");
    if (details) {
      details.hidden = !(checked && checked.getAttribute("data-illegal") === "true");
    }
  }
  cards.forEach(function (card) {
    card.querySelectorAll("input[type=radio][data-class]").forEach(function (radio) {
      radio.addEventListener("change", function () { showDetails(card); });
    });
    showDetails(card);
  });
  var keys = { "1": "baseline", "2": "national", "3": "doubtful", "4": "not_illegal", "5": "ignore" };
  document.addEventListener("keydown", function (event) {
    var tag = (event.target && event.target.tagName) || "";
    if (event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (/^(INPUT|TEXTAREA|SELECT)$/.test(tag) && event.target.type !== "radio" && event.target.type !== "checkbox") {
      return;
    }
    if (event.key === "n") {
      var next = document.getElementById("next-item");
      if (next) { event.preventDefault(); next.click(); }
      return;
    }
    if (!cards.length) {
      return;
    }
    if (event.key === "j") {
      event.preventDefault();
      focusCard(current + 1);
    } else if (event.key === "k") {
      event.preventDefault();
      focusCard(current - 1);
    } else if (keys[event.key]) {
      if (current < 0) { focusCard(0); }
      var radio = cards[current].querySelector("input[type=radio][data-class='" + keys[event.key] + "']");
      if (radio) {
        event.preventDefault();
        radio.checked = true;
        showDetails(cards[current]);
        if (keys[event.key] === "ignore" || keys[event.key] === "not_illegal") {
          focusCard(current + 1);
        }
      }
    } else if (event.key === "u") {
      if (current < 0) { focusCard(0); }
      unblur(cards[current]);
    } else if (event.key === "s") {
      var form = document.getElementById("assessment-form");
      if (form) { event.preventDefault(); form.requestSubmit(); }
    }
  });
  if (cards.length && document.getElementById("assessment-form")) {
    focusCard(0);
  }
})();
