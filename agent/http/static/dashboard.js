// Ask before a form marked data-confirm is sent (reinstating a number). Nothing else.
document.addEventListener("submit", (event) => {
  const message = event.target.dataset && event.target.dataset.confirm;
  if (message && !window.confirm(message)) event.preventDefault();
});
