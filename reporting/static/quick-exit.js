/* Quick exit: leave for a neutral site without leaving this page in the tab's history.
   Optional: without JavaScript the link still leads away; this only adds the Esc key
   (pressed twice within a second) and replaces the history entry. */
(function () {
  "use strict";
  var link = document.querySelector("a.quick-exit");
  if (!link) {
    return;
  }
  var lastEscape = 0;

  function leave(event) {
    if (event) {
      event.preventDefault();
    }
    document.body.style.visibility = "hidden";
    window.location.replace(link.href);
  }

  link.addEventListener("click", leave);
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" && event.key !== "Esc") {
      return;
    }
    var now = Date.now();
    if (now - lastEscape < 1000) {
      leave(event);
    }
    lastEscape = now;
  });
  var hint = document.getElementById("quick-exit-hint");
  if (hint) {
    hint.hidden = false;
  }
})();
