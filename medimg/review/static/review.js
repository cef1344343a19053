// Keyboard shortcuts for the review pages; everything here is also a button or a link.
(function () {
  "use strict";
  function typing(event) {
    var t = event.target;
    return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.isContentEditable);
  }
  function toggleHeatmap() {
    var map = document.getElementById("heatmap");
    var film = document.getElementById("film");
    var caption = document.getElementById("heatmap-caption");
    var button = document.getElementById("toggle-heatmap");
    if (!map) return;
    var show = map.hidden;
    map.hidden = !show;
    film.hidden = show;
    caption.hidden = !show;
    button.setAttribute("aria-pressed", String(show));
    button.textContent = (show ? "Hide" : "Show") + " heat map (h)";
  }
  document.addEventListener("DOMContentLoaded", function () {
    var button = document.getElementById("toggle-heatmap");
    if (button) button.addEventListener("click", toggleHeatmap);
    var rows = Array.prototype.slice.call(document.querySelectorAll("tr[data-href]"));
    var selected = rows.length ? 0 : -1;
    function select(i) {
      if (!rows.length) return;
      selected = Math.max(0, Math.min(rows.length - 1, i));
      rows.forEach(function (r, k) { r.classList.toggle("selected", k === selected); });
      rows[selected].scrollIntoView({block: "nearest"});
    }
    if (rows.length) select(0);
    document.addEventListener("keydown", function (event) {
      if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
      var key = event.key;
      var confirm = document.getElementById("confirm");
      if (key === "h") { toggleHeatmap(); }
      else if (key === "c" && confirm) { confirm.submit(); }
      else if (/^[1-9]$/.test(key) && document.querySelector("form.correct[data-key='" + key + "']")) {
        document.querySelector("form.correct[data-key='" + key + "']").submit();
      }
      else if (key === "n" && document.getElementById("next")) { window.location = document.getElementById("next").href; }
      else if (key === "w") { window.location = "/"; }
      else if (key === "j" && rows.length) { select(selected + 1); }
      else if (key === "k" && rows.length) { select(selected - 1); }
      else if (key === "Enter" && rows.length && selected >= 0) { window.location = rows[selected].dataset.href; }
      else if (key === "u" && document.getElementById("image")) { document.getElementById("image").focus(); }
      else { return; }
      event.preventDefault();
    });
  });
})();
