// Same-origin JSON calls; a non-2xx answer becomes an Error carrying the server's {"error": "..."}.
//
// Where the server wants a token (a 401), every call waits on one question to the user (main.js
// asks), then retries with `Authorization: Bearer`. The token lives in sessionStorage: this tab,
// until it closes; never localStorage, never a URL.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const TOKEN_KEY = "weightserve.token";
let askForToken = null;
let asking = null;

// `ask(reason)` resolves to the token the user gave, or to null when they declined.
export function onTokenNeeded(ask) {
  askForToken = ask;
}

export function storedToken() {
  try { return sessionStorage.getItem(TOKEN_KEY) || ""; } catch { return ""; }
}

export function forgetToken() {
  try { sessionStorage.removeItem(TOKEN_KEY); } catch { /* storage disabled: nothing kept */ }
}

function tokenFromUser(reason) {
  // One question however many calls were refused at once; they all retry with its answer.
  asking ??= Promise.resolve(askForToken(reason))
    .then((token) => {
      if (token) sessionStorage.setItem(TOKEN_KEY, token);
      return token || null;
    })
    .finally(() => { asking = null; });
  return asking;
}

function errorText(response, body) {
  let doc = null;
  try { doc = body ? JSON.parse(body) : null; } catch { doc = null; }
  return doc && typeof doc.error === "string" ? doc.error : `${response.status} ${response.statusText}`;
}

async function send(path, init = {}) {
  for (;;) {
    const token = storedToken();
    const headers = { ...(init.headers || {}) };
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401 || !askForToken) return response;
    if (storedToken() !== token) continue; // a token arrived while this call was out: use it
    const reason = errorText(response, await response.text());
    if (token) forgetToken(); // the server no longer takes it
    if (!(await tokenFromUser(reason))) throw new ApiError(401, `${path}: ${reason}`);
  }
}

async function parse(response, path) {
  const body = await response.text();
  if (!response.ok) throw new ApiError(response.status, `${path}: ${errorText(response, body)}`);
  try { return body ? JSON.parse(body) : null; } catch { return null; }
}

export async function getJSON(path) {
  return parse(await send(path, { headers: { Accept: "application/json" } }), path);
}

export async function postJSON(path, body) {
  const response = await send(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  return parse(response, path);
}

export async function getBytes(path) {
  const response = await send(path);
  if (!response.ok) await parse(response, path);
  return response.arrayBuffer();
}

export const enc = encodeURIComponent;

export function modelPath(name, version) {
  const base = `/v2/models/${enc(name)}`;
  return version === null || version === undefined || version === "" ? base : `${base}/versions/${enc(version)}`;
}

// Run async jobs with at most `limit` in flight (the weight store works one tensor at a time anyway).
export async function pool(items, limit, job) {
  const results = new Array(items.length);
  let next = 0;
  async function worker() {
    while (next < items.length) {
      const i = next++;
      try { results[i] = await job(items[i], i); } catch (err) { results[i] = err; }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
