// Progressive enhancement only: every page works without this file.
'use strict';
document.addEventListener('DOMContentLoaded', () => {
  // Times: the server writes UTC; the browser knows the person's locale and zone.
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  for (const t of document.querySelectorAll('time[datetime]')) {
    const d = new Date(t.getAttribute('datetime'));
    if (!isNaN(d)) { t.textContent = fmt.format(d); }
  }
  // Copy buttons, shown only where the clipboard can be written.
  if (navigator.clipboard) {
    for (const b of document.querySelectorAll('button[data-copy]')) {
      b.hidden = false;
      b.addEventListener('click', () => {
        const el = document.getElementById(b.dataset.copy);
        navigator.clipboard.writeText(el.innerText.trim()).then(() => { b.textContent = 'Copied'; });
      });
    }
  }
});
