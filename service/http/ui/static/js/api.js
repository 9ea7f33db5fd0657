// Same-origin JSON calls; a non-2xx answer becomes an Error carrying the server's {"error": "..."}.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function parse(response, path) {
  const body = await response.text();
  let doc = null;
  try { doc = body ? JSON.parse(body) : null; } catch { doc = null; }
  if (!response.ok) {
    const reason = doc && typeof doc.error === "string" ? doc.error : `${response.status} ${response.statusText}`;
    throw new ApiError(response.status, `${path}: ${reason}`);
  }
  return doc;
}

export async function getJSON(path) {
  return parse(await fetch(path, { headers: { Accept: "application/json" } }), path);
}

export async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body ?? {}),
  });
  return parse(response, path);
}

export async function getBytes(path) {
  const response = await fetch(path);
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
