import { defineConfig } from "@playwright/test";

/**
 * End-to-end tests of the demo page against the real stack. tests/test_frontend.py starts the
 * servers and passes their URLs in TASKSTREAM_E2E_* (see e2e/env.ts); `make test` runs it.
 * Debian's Chromium only: no browser is ever downloaded (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1).
 */
export default defineConfig({
  testDir: "e2e",
  // The scenarios share one server process and its open-streams gauge: one at a time.
  workers: 1,
  fullyParallel: false,
  retries: 0,
  timeout: 120_000,
  expect: { timeout: 30_000 },
  reporter: [["list"]],
  use: {
    headless: true,
    launchOptions: {
      executablePath: process.env.TASKSTREAM_E2E_CHROMIUM ?? "/usr/bin/chromium",
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking"],
    },
  },
});
