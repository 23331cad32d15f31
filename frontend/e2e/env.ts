/** What tests/test_frontend.py passes: servers, users and the events topic of its stack. */
export interface E2EUser {
  username: string;
  password: string;
}

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run the end-to-end tests through tests/test_frontend.py (make test), which starts the stack`,
    );
  }
  return value;
}

/** A server with default settings. */
export const BASE = required("TASKSTREAM_E2E_BASE");
/** A server whose access tokens live JWT_ACCESS_SECONDS=6. */
export const SHORT_TOKEN_BASE = required("TASKSTREAM_E2E_SHORT_TOKEN_BASE");
/** One user per scenario, so the per-user stream cap of one does not touch another. */
export const USERS = JSON.parse(required("TASKSTREAM_E2E_USERS")) as Record<string, E2EUser>;
export function user(name: string): E2EUser {
  const found = USERS[name];
  if (found === undefined) throw new Error(`no e2e user ${name}`);
  return found;
}
