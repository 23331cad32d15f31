// Taskstream browser client: keeps one EventSource open to the user's task stream.
//
// Native EventSource reconnects by itself after a network error or a cleanly ended 200
// stream, sending Last-Event-ID. It gives up for good on any non-200 answer (401 when the
// access token in the cookie expired, 429 over the stream cap). This helper then refreshes
// the token, re-sets the cookie and re-opens with the last id it saw, with backoff.
"use strict";

export class TaskstreamClient {
  constructor({ baseUrl = "", onEvent, onState = () => {}, types }) {
    this.baseUrl = baseUrl;
    this.onEvent = onEvent;
    this.onState = onState;
    this.types = types;
    this.access = null;
    this.refresh = null;
    this.lastEventId = "";
    this.source = null;
    this.backoffMs = 500;
    this.timer = null;
  }

  async login(username, password) {
    const r = await fetch(`${this.baseUrl}/api/v1/auth/token/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ username, password }),
    });
    if (!r.ok) throw new Error((await r.json()).detail || `login failed (${r.status})`);
    const body = await r.json();
    this.access = body.access;
    this.refresh = body.refresh;
    await this.setCookie();
  }

  async refreshAccess() {
    const r = await fetch(`${this.baseUrl}/api/v1/auth/token/refresh/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh: this.refresh }),
    });
    if (!r.ok) throw new Error("session expired: log in again");
    this.access = (await r.json()).access;
    await this.setCookie();
  }

  async setCookie() {
    const r = await this.api("/api/v1/auth/cookie/", { method: "POST" });
    const { expires_in } = await r.json();
    // Renew the cookie a little before the token in it expires.
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refreshAccess().catch(() => {}), Math.max(5, expires_in - 30) * 1000);
  }

  api(path, init = {}) {
    return fetch(`${this.baseUrl}${path}`, {
      ...init,
      credentials: "same-origin",
      headers: { ...(init.headers || {}), authorization: `Bearer ${this.access}`, "content-type": "application/json" },
    });
  }

  open() {
    this.close();
    const query = this.lastEventId ? `?last_event_id=${encodeURIComponent(this.lastEventId)}` : "";
    const source = new EventSource(`${this.baseUrl}/api/v1/events/stream${query}`, { withCredentials: true });
    this.source = source;
    source.onopen = () => { this.backoffMs = 500; this.onState("open"); };
    const handler = (e) => {
      if (e.lastEventId) this.lastEventId = e.lastEventId;
      this.onEvent(e.type, JSON.parse(e.data), e.lastEventId);
    };
    for (const type of this.types) source.addEventListener(type, handler);
    source.addEventListener("heartbeat", () => this.onState("open"));
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) { this.onState("reconnecting"); return; }
      // CLOSED: the server refused (401/429). Refresh the credential and re-open.
      this.onState("closed");
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 15000);
      setTimeout(() => this.refreshAccess().then(() => this.open()).catch((err) => this.onState(String(err))), delay);
    };
  }

  close() {
    if (this.source) this.source.close();
    this.source = null;
  }
}
