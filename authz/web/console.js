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

// Passkeys (WebAuthn) need the script; their buttons show only where the
// browser can make and use them.
(() => {
  if (!window.PublicKeyCredential) { return; }
  const b64 = {
    decode: s => Uint8Array.from(atob(s.replace(/-/g, '+').replace(/_/g, '/')), c => c.charCodeAt(0)).buffer,
    encode: buf => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, ''),
  };
  const post = async (url, csrf, body) => {
    const r = await fetch(url, { method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': csrf }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) { throw new Error(data.error_description || 'The server refused the passkey (' + r.status + ').'); }
    return data;
  };
  const fail = err => {
    const el = document.getElementById('passkey-error');
    el.textContent = err.name === 'NotAllowedError' ? 'The passkey was not used (cancelled, or timed out). Try again.' : err.message;
    el.hidden = false;
  };
  const credentialJSON = c => {
    const r = c.response, out = { id: c.id, rawId: b64.encode(c.rawId), type: c.type,
      authenticatorAttachment: c.authenticatorAttachment, clientExtensionResults: c.getClientExtensionResults(), response: {} };
    out.response.clientDataJSON = b64.encode(r.clientDataJSON);
    if (r.attestationObject) {
      out.response.attestationObject = b64.encode(r.attestationObject);
      if (r.getTransports) { out.response.transports = r.getTransports(); }
    } else {
      out.response.authenticatorData = b64.encode(r.authenticatorData);
      out.response.signature = b64.encode(r.signature);
      if (r.userHandle) { out.response.userHandle = b64.encode(r.userHandle); }
    }
    return out;
  };
  document.addEventListener('DOMContentLoaded', () => {
    for (const box of document.querySelectorAll('[data-passkey-register]')) { box.hidden = false; }
    for (const button of document.querySelectorAll('button[data-passkey-add]')) {
      button.addEventListener('click', async () => {
        try {
          const begun = await post('/account/security/passkeys/options', button.dataset.csrf, {});
          const o = begun.options;
          o.challenge = b64.decode(o.challenge);
          o.user.id = b64.decode(o.user.id);
          for (const c of o.excludeCredentials || []) { c.id = b64.decode(c.id); }
          const c = await navigator.credentials.create({ publicKey: o });
          await post('/account/security/passkeys', button.dataset.csrf,
            { ceremony: begun.ceremony, name: document.getElementById('passkey-name').value, credential: credentialJSON(c) });
          window.location.assign(button.dataset.continue || '/account/security');
        } catch (err) { fail(err); }
      });
    }
    for (const button of document.querySelectorAll('button[data-passkey-login]')) {
      button.hidden = false;
      button.addEventListener('click', async () => {
        try {
          const mode = button.dataset.passkeyLogin;
          const begun = await post('/login/passkey/options', button.dataset.csrf, { challenge: button.dataset.challenge, mode });
          const o = begun.options;
          o.challenge = b64.decode(o.challenge);
          for (const c of o.allowCredentials || []) { c.id = b64.decode(c.id); }
          const c = await navigator.credentials.get({ publicKey: o });
          const done = await post('/login/passkey', button.dataset.csrf, { ceremony: begun.ceremony, mode, credential: credentialJSON(c) });
          window.location.assign(done.next);
        } catch (err) { fail(err); }
      });
    }
  });
})();
