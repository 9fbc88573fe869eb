// The public API, and nothing else: every call the page makes goes through here, with the key the user
// entered (kept in session storage: gone when the tab closes). Errors keep the API's own words.

const KEY = 'agss.apiKey';

export function getKey() {
  return sessionStorage.getItem(KEY) || '';
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
}

/** An error as the API worded it: `message` is error.message of its body, `code` its error.code. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** A URL of the API, relative to the page (so the console also works behind a path prefix). */
export function apiUrl(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  return url;
}

export async function errorFrom(resp) {
  let code = 'http_error';
  let message = `${resp.status} ${resp.statusText}`.trim();
  try {
    const body = await resp.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch { /* not our error body: keep the status line */ }
  return new ApiError(resp.status, code, message, resp.headers.get('Retry-After'));
}

/** fetch() with the key; throws ApiError for anything but 2xx. */
export async function call(path, { method = 'GET', json, body, headers = {}, params, signal } = {}) {
  const h = new Headers(headers);
  const key = getKey();
  if (key) h.set('Authorization', `Bearer ${key}`);
  let payload = body;
  if (json !== undefined) {
    h.set('Content-Type', 'application/json');
    payload = JSON.stringify(json);
  }
  let resp;
  try {
    resp = await fetch(apiUrl(path, params), { method, body: payload, headers: h, signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', `the API did not answer (${e.message})`);
  }
  if (!resp.ok) throw await errorFrom(resp);
  return resp;
}

export async function callJson(path, options) {
  return (await call(path, options)).json();
}

/** The events URL of a job: EventSource cannot send headers, so the key goes in the query (this route only). */
export function eventsUrl(jobId, start = 0) {
  return apiUrl(`v1/jobs/${encodeURIComponent(jobId)}/events`, { start: start || undefined, key: getKey() || undefined });
}

export function wsUrl(sessionId) {
  const url = apiUrl(`v1/sessions/${encodeURIComponent(sessionId)}/ws`);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url;
}
