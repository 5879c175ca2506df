// Disclosure buttons: <button data-toggle="id" aria-controls="id" aria-expanded="false"> shows/hides #id.
// Delegated from the document so rows swapped in by htmx work too.
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-toggle]");
  if (!button) return;
  var target = document.getElementById(button.getAttribute("data-toggle"));
  if (!target) return;
  var open = button.getAttribute("aria-expanded") === "true";
  button.setAttribute("aria-expanded", open ? "false" : "true");
  target.hidden = open;
});
