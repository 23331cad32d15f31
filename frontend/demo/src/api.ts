/**
 * The demo's session: JWTs from the API, the stream's HttpOnly cookie, and API calls that
 * refresh once on a 401. Tokens sit in localStorage so every tab of the demo shares one
 * session (a real app keeps its own session handling; only `refreshSession` matters to the
 * stream client).
 */
import { UnauthorizedError } from "@taskstream/client";

const KEY = "taskstream-demo-session";

interface Session {
  access: string;
  refresh: string;
}

export interface ApiTask {
  id: string;
  kind: string;
  status: string;
  progress: number;
  message: string;
  error: string;
  result: unknown;
  created_at: string;
  [field: string]: unknown;
}

export interface TaskPage {
  count: number;
  results: ApiTask[];
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    super(typeof body === "object" && body !== null && "detail" in body ? String(body.detail) : `HTTP ${status}`);
  }
}

function load(): Session | null {
  try {
    const value: unknown = JSON.parse(localStorage.getItem(KEY) ?? "null");
    if (typeof value === "object" && value !== null && "access" in value && "refresh" in value) {
      return { access: String(value.access), refresh: String(value.refresh) };
    }
  } catch {
    // A damaged entry is no session.
  }
  return null;
}

function save(session: Session | null): void {
  if (session === null) localStorage.removeItem(KEY);
  else localStorage.setItem(KEY, JSON.stringify(session));
}

export function hasSession(): boolean {
  return load() !== null;
}

async function json(response: Response): Promise<unknown> {
  const text = await response.text();
  return text === "" ? null : (JSON.parse(text) as unknown);
}

/** Put the access token in the cookie the stream reads (EventSource-style auth). */
async function setStreamCookie(access: string): Promise<void> {
  const response = await fetch("/api/v1/auth/cookie/", {
    method: "POST",
    credentials: "same-origin",
    headers: { authorization: `Bearer ${access}` },
  });
  if (!response.ok) throw new ApiError(response.status, await json(response));
}

export async function login(username: string, password: string): Promise<void> {
  const response = await fetch("/api/v1/auth/token/", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const body = await json(response);
  if (!response.ok) throw new ApiError(response.status, body);
  const session = body as Session;
  save(session);
  await setStreamCookie(session.access);
}

export function logout(): void {
  save(null);
}

let refreshing: Promise<void> | null = null;

/**
 * New access token, then a new stream cookie. Concurrent callers (the stream after its 401,
 * an API call after its own) share one refresh. A refused refresh token ends the session.
 */
export function refreshSession(): Promise<void> {
  refreshing ??= (async () => {
    const session = load();
    if (session === null) throw new UnauthorizedError("not logged in");
    const response = await fetch("/api/v1/auth/token/refresh/", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh: session.refresh }),
    });
    if (response.status === 401) {
      save(null);
      throw new UnauthorizedError("session expired");
    }
    const body = await json(response);
    if (!response.ok) throw new ApiError(response.status, body);
    const access = (body as { access: string }).access;
    save({ ...session, access });
    await setStreamCookie(access);
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

export async function api<T>(path: string, init: RequestInit = {}, retried = false): Promise<T> {
  const session = load();
  if (session === null) throw new UnauthorizedError("not logged in");
  const response = await fetch(path, {
    ...init,
    headers: {
      ...(init.headers as Record<string, string> | undefined),
      authorization: `Bearer ${session.access}`,
      "content-type": "application/json",
    },
  });
  if (response.status === 401 && !retried) {
    await refreshSession();
    return api<T>(path, init, true);
  }
  const body = await json(response);
  if (!response.ok) throw new ApiError(response.status, body);
  return body as T;
}
