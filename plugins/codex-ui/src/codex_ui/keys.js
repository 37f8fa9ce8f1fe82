// Keyboard shortcuts (Gradio has no page-wide key bindings): Ctrl+Enter generates, Esc interrupts the job
// this page follows (it stops at its next step and keeps its image), Shift+Esc cancels it (discarded),
// Alt+Enter skips the job running on the service. Each one clicks the button that does the same, so a key
// and a click are one code path.
document.addEventListener("keydown", (event) => {
  const press = (id) => {
    const button = document.getElementById(id);
    if (!button) return;
    event.preventDefault();
    event.stopPropagation();
    // the focused field (or the Request JSON editor) hands its value over first: blurring it queues its
    // change before the click, as a mouse click on the button would
    if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
    setTimeout(() => button.click(), 150);
  };
  // Esc in an open dropdown closes the dropdown, and no more
  const open = document.activeElement && document.activeElement.getAttribute("aria-expanded") === "true";
  if (event.key === "Escape" && open) return;
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) press("codex-generate");
  else if (event.key === "Enter" && event.altKey) press("codex-skip");
  else if (event.key === "Escape" && event.shiftKey) press("codex-cancel-followed");
  else if (event.key === "Escape") press("codex-interrupt");
}, true);
