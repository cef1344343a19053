// What GX's Data Docs got from jQuery and Bootstrap's script, written for these pages alone:
// tabs, "Show more info..." sections and the "Failed Only" filter. Nothing is fetched.
(function () {
  "use strict";

  function target(link) {
    return document.getElementById(link.getAttribute("href").slice(1));
  }

  function showTab(link) {
    link.closest(".nav").querySelectorAll('[data-toggle="tab"]').forEach(function (tab) {
      var shown = tab === link;
      tab.classList.toggle("active", shown);
      tab.setAttribute("aria-selected", String(shown));
      var pane = target(tab);
      if (pane) {
        pane.classList.toggle("active", shown);
        pane.classList.toggle("show", shown);
      }
    });
  }

  function toggleCollapse(link) {
    var body = target(link);
    if (body) {
      link.setAttribute("aria-expanded", String(body.classList.toggle("show")));
    }
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest('[data-toggle="tab"], [data-toggle="collapse"]');
    if (!link) {
      return;
    }
    event.preventDefault();
    if (link.dataset.toggle === "tab") {
      showTab(link);
    } else {
      toggleCollapse(link);
    }
  });

  // GX marks what passed: a row's cell, a block, or a whole column's section (its table of
  // contents entry goes with it).
  function showFailedOnly(failedOnly, button) {
    document.querySelectorAll(".hide-succeeded-validation-target-child").forEach(function (cell) {
      cell.parentElement.hidden = failedOnly;
    });
    document.querySelectorAll(".hide-succeeded-validation-target").forEach(function (block) {
      block.hidden = failedOnly;
    });
    document
      .querySelectorAll(".hide-succeeded-validations-column-section-target-child")
      .forEach(function (child) {
        var section = child.parentElement.parentElement;
        section.hidden = failedOnly;
        document.querySelectorAll('a[href="#' + section.id + '"]').forEach(function (entry) {
          entry.hidden = failedOnly;
        });
      });
    if (button) {
      button.parentElement.querySelectorAll(".btn").forEach(function (other) {
        other.classList.toggle("active", other === button);
      });
    }
  }

  window.medimgDocs = { showFailedOnly: showFailedOnly };
})();
