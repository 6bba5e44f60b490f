// Passkeys on the login page (button, autofill, sign-up) and the account
// page (add, rename, remove). Plain JavaScript, no build step; served as a
// file because the pages' CSP allows no inline scripts.
//
// The JSON API is the broker's /webauthn/*: an options call answers
// {"publicKey": …, "state": …} and sets a flow cookie; the verify call
// sends {"state", "credential": PublicKeyCredential.toJSON()} back.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);

  // --- base64url and JSON conversions, for browsers without
  // PublicKeyCredential.parse*OptionsFromJSON / toJSON.
  const b64u = {
    decode(s) {
      const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
      return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
    },
    encode(buf) {
      let s = "";
      for (const b of new Uint8Array(buf)) s += String.fromCharCode(b);
      return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
    },
  };
  const descriptors = (list) => (list || []).map((d) => Object.assign({}, d, { id: b64u.decode(d.id) }));

  function creationOptions(o) {
    if (PublicKeyCredential.parseCreationOptionsFromJSON) return PublicKeyCredential.parseCreationOptionsFromJSON(o);
    return Object.assign({}, o, {
      challenge: b64u.decode(o.challenge),
      user: Object.assign({}, o.user, { id: b64u.decode(o.user.id) }),
      excludeCredentials: descriptors(o.excludeCredentials),
    });
  }

  function requestOptions(o) {
    if (PublicKeyCredential.parseRequestOptionsFromJSON) return PublicKeyCredential.parseRequestOptionsFromJSON(o);
    return Object.assign({}, o, { challenge: b64u.decode(o.challenge), allowCredentials: descriptors(o.allowCredentials) });
  }

  function credentialJSON(c) {
    if (typeof c.toJSON === "function") return c.toJSON();
    const r = c.response, out = {
      id: c.id, rawId: b64u.encode(c.rawId), type: c.type, authenticatorAttachment: c.authenticatorAttachment || undefined,
      clientExtensionResults: c.getClientExtensionResults(), response: { clientDataJSON: b64u.encode(r.clientDataJSON) },
    };
    if (r.attestationObject) {
      out.response.attestationObject = b64u.encode(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = b64u.encode(r.authenticatorData);
      out.response.signature = b64u.encode(r.signature);
      if (r.userHandle) out.response.userHandle = b64u.encode(r.userHandle);
    }
    return out;
  }

  // --- the API.
  class APIError extends Error {
    constructor(status, body) {
      super((body && body.message) || "the request failed (" + status + ")");
      this.status = status;
      this.code = body && body.error;
    }
  }

  async function call(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (!res.ok) throw new APIError(res.status, data);
    return data;
  }

  async function register(body, label) {
    const o = await call("POST", "/webauthn/register/options", body);
    const cred = await navigator.credentials.create({ publicKey: creationOptions(o.publicKey) });
    return call("POST", "/webauthn/register/verify", { state: o.state, name: label || undefined, credential: credentialJSON(cred) });
  }

  // An autofill (conditional) ceremony waits on every visit of the login
  // page, and each one's state lives in a cookie for 5 minutes. A ceremony
  // that was never answered is kept in sessionStorage and reused by the
  // next visit of this tab, so reloading the page does not pile up cookies.
  const pendingKey = "broker.passkey.conditional";
  function pendingConditional(body) {
    try {
      const p = JSON.parse(sessionStorage.getItem(pendingKey) || "null");
      if (p && p.for === JSON.stringify(body) && p.until > Date.now()) return p.options;
    } catch (_) { /* storage unavailable or garbage: fetch new options */ }
    return null;
  }
  function keepConditional(body, options) {
    try {
      sessionStorage.setItem(pendingKey, JSON.stringify({ for: JSON.stringify(body), until: Date.now() + 4 * 60 * 1000, options }));
    } catch (_) { /* not kept: the next visit fetches new options */ }
  }
  function dropConditional() {
    try { sessionStorage.removeItem(pendingKey); } catch (_) { /* nothing kept */ }
  }

  async function login(body, signal) {
    const conditional = body.mediation === "conditional";
    let o = conditional ? pendingConditional(body) : null;
    if (!o) {
      o = await call("POST", "/webauthn/login/options", body);
      if (conditional) keepConditional(body, o);
    }
    const req = { publicKey: requestOptions(o.publicKey) };
    if (o.mediation) req.mediation = o.mediation;
    if (signal) req.signal = signal;
    const cred = await navigator.credentials.get(req);
    if (conditional) dropConditional(); // the verify call uses up its flow
    try {
      return await call("POST", "/webauthn/login/verify", { state: o.state, credential: credentialJSON(cred) });
    } catch (err) {
      // Tell the authenticator about a passkey the broker no longer knows
      // (removed on the account page), so it stops offering it.
      if (err.code === "AUTH_INVALID_KEY_ID" && PublicKeyCredential.signalUnknownCredential && o.publicKey.rpId) {
        PublicKeyCredential.signalUnknownCredential({ rpId: o.publicKey.rpId, credentialId: cred.id }).catch(() => {});
      }
      throw err;
    }
  }

  // --- messages: errors go to a role=alert element, progress to a
  // role=status one, so screen readers announce both.
  function say(msg) {
    const st = $("passkey-status");
    if (st) st.textContent = msg;
  }
  function fail(err) {
    say("");
    let msg = err && err.message ? err.message : String(err);
    if (err && err.name === "NotAllowedError") msg = "The passkey request was cancelled or timed out.";
    else if (err && err.name === "InvalidStateError") msg = "This device already holds a passkey for your account.";
    else if (err && err.name === "SecurityError") msg = "Passkeys cannot be used on this address.";
    const el = $("passkey-error");
    if (!el) return;
    el.textContent = msg.charAt(0).toUpperCase() + msg.slice(1);
    el.hidden = false;
    el.focus();
  }
  function clearError() {
    const el = $("passkey-error");
    if (el) { el.hidden = true; el.textContent = ""; }
  }
  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    if (on) button.setAttribute("aria-busy", "true"); else button.removeAttribute("aria-busy");
  }
  const supported = () => typeof window.PublicKeyCredential === "function" && navigator.credentials;

  function reauthenticate() {
    window.location.assign("/login?reauth=1&redirect_to=" + encodeURIComponent("/account"));
  }

  // --- the login page.
  function loginPage(section) {
    const form = $("passkey-login"), nameInput = $("passkey-name"), button = $("passkey-login-button");
    const reauth = section.dataset.reauth === "1";
    const redirectTo = section.dataset.redirectTo || "/";
    const done = (ans) => window.location.assign((ans && ans.redirect_to) || redirectTo);
    if (!supported()) {
      fail(new Error("this browser does not support passkeys"));
      busy(button, true);
      return;
    }
    let pending = null; // the conditional (autofill) request, if any
    let abort = null;

    async function startAutofill() {
      if (!PublicKeyCredential.isConditionalMediationAvailable) return;
      try { if (!(await PublicKeyCredential.isConditionalMediationAvailable())) return; } catch (_) { return; }
      abort = new AbortController();
      pending = login({ mediation: "conditional", redirect_to: redirectTo, reauth: reauth || undefined }, abort.signal)
        .then(done)
        .catch((err) => {
          // Aborted for the button, or the user dismissed autofill: quiet.
          if (err && (err.name === "AbortError" || err.name === "NotAllowedError")) return;
          fail(err);
        });
    }

    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearError();
      busy(button, true);
      if (abort) {
        abort.abort();
        await pending; // a browser runs one WebAuthn request at a time
        abort = pending = null;
      }
      say("Waiting for your passkey…");
      try {
        const name = nameInput.value.trim();
        done(await login({ name: name || undefined, redirect_to: redirectTo, reauth: reauth || undefined }));
      } catch (err) {
        fail(err);
        busy(button, false);
        startAutofill();
      }
    });

    const signup = $("passkey-signup");
    if (signup) {
      signup.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        clearError();
        const name = $("signup-name"), email = $("signup-email"), sb = $("passkey-signup-button");
        if (!name.value.trim()) {
          fail(new Error("choose a username"));
          name.setAttribute("aria-invalid", "true");
          name.focus();
          return;
        }
        name.removeAttribute("aria-invalid");
        busy(sb, true);
        if (abort) {
          abort.abort();
          await pending;
          abort = pending = null;
        }
        say("Creating your passkey…");
        try {
          done(await register({ name: name.value.trim(), email: email.value.trim() || undefined, redirect_to: redirectTo }));
        } catch (err) {
          fail(err);
          busy(sb, false);
          startAutofill();
        }
      });
    }
    startAutofill();
  }

  // --- the account page.
  function accountPage() {
    const add = $("passkey-add");
    if (!supported()) {
      fail(new Error("this browser does not support passkeys, so it cannot add one"));
      busy($("passkey-add-button"), true);
    }
    add.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearError();
      const button = $("passkey-add-button");
      busy(button, true);
      say("Creating your passkey…");
      try {
        await register({}, $("passkey-add-name").value.trim());
        say("Passkey added.");
        window.location.reload();
      } catch (err) {
        if (err.code === "AUTH_REAUTHENTICATION_REQUIRED") return reauthenticate();
        fail(err);
        busy(button, false);
      }
    });

    document.addEventListener("submit", async (ev) => {
      const form = ev.target.closest("form.passkey-rename");
      if (!form) return;
      ev.preventDefault();
      clearError();
      const input = form.querySelector("input[name=name]"), button = form.querySelector("button");
      busy(button, true);
      try {
        const p = await call("PATCH", "/webauthn/credentials/" + encodeURIComponent(form.dataset.id), { name: input.value });
        input.value = p.name;
        button.setAttribute("aria-label", "Save the name of passkey " + p.name);
        const remove = form.closest("tr").querySelector("button.passkey-remove");
        if (remove) remove.setAttribute("aria-label", "Remove passkey " + p.name);
        say("Passkey renamed to “" + p.name + "”.");
      } catch (err) {
        fail(err);
      } finally {
        busy(button, false);
      }
    });

    document.addEventListener("click", async (ev) => {
      const button = ev.target.closest("button.passkey-remove");
      if (!button) return;
      clearError();
      busy(button, true);
      try {
        await call("DELETE", "/webauthn/credentials/" + encodeURIComponent(button.dataset.id));
        const row = button.closest("tr");
        if (row) row.remove();
        say("Passkey removed.");
        const heading = $("passkeys-h");
        if (heading) { heading.tabIndex = -1; heading.focus(); }
      } catch (err) {
        if (err.code === "AUTH_REAUTHENTICATION_REQUIRED") return reauthenticate();
        fail(err);
        busy(button, false);
      }
    });
  }

  // Expose the ceremonies for apps and tests that drive them by hand.
  window.brokerPasskeys = { register, login, credentialJSON, creationOptions, requestOptions, call };

  const section = $("passkey");
  if (section) loginPage(section);
  else if ($("passkeys")) accountPage();
})();
