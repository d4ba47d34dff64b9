// powermem-gateway UI niceties. The page works without this file: every action is a plain
// HTML form, and the read-only view is server-rendered.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Filters: choosing a provider or a page size applies it at once.
  for (const select of document.querySelectorAll("select.autosubmit")) {
    select.addEventListener("change", () => select.form && select.form.submit());
  }
  // A secret shown once: select it on click, and offer to copy it.
  for (const input of document.querySelectorAll("input.once")) {
    input.addEventListener("focus", () => input.select());
    if (!navigator.clipboard) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "copy";
    button.textContent = "Copy";
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(input.value);
      button.textContent = "Copied";
    });
    input.after(button);
  }
});
