// What every page shares: the token (from `?token=` or the token field, kept in
// sessionStorage), calls to the node's API, and small DOM helpers that only ever set
// text (never HTML), so nothing a stream name or a chat message holds can become markup.

const TOKEN_KEY = 'zenlive.token';

/** The page's settings, from the server-rendered `data-` attributes of `<body>`. */
export const page = document.body.dataset;

/** Whether the node checks tokens. */
export const authOn = page.auth === 'on';

/** Stream and app names the node accepts. */
export const NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$/;

/** Takes `?token=` off the address bar (into sessionStorage), so it is neither bookmarked,
 * shared by copying the URL, nor kept in the history. */
export function takeTokenFromAddress() {
  const url = new URL(window.location.href);
  const token = url.searchParams.get('token');
  if (token === null) return;
  url.searchParams.delete('token');
  if (token) setToken(token);
  history.replaceState(history.state, '', url.pathname + url.search + url.hash);
}

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(token) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage refused (private mode): the token lasts until the page closes.
  }
}

/** The claims of a JWT, read without verifying it (the node verifies; the page only
 * decides what to show), or null. */
export function claims(token) {
  const part = (token || '').split('.')[1];
  if (!part) return null;
  try {
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
    const value = JSON.parse(new TextDecoder().decode(bytes));
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

/** Shows the token field when the node checks tokens; `changed` runs after it changes. */
export function tokenField(changed) {
  const form = document.getElementById('token-form');
  const input = document.getElementById('token');
  if (!form || !input) return;
  form.hidden = !authOn && !getToken();
  input.value = getToken();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    changed();
  });
  document.getElementById('token-clear')?.addEventListener('click', () => {
    input.value = '';
    setToken('');
    changed();
  });
}

/** Calls the node's API with the token; answers `{ok, status, body, message}` where
 * `message` says what went wrong in words. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    return { ok: false, status: 0, body: null, code: 'network', message: 'the node did not answer' };
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    // Not JSON: the status says enough.
  }
  const error = json && json.error;
  return {
    ok: response.ok,
    status: response.status,
    body: json,
    code: error ? String(error.code) : '',
    message: error ? String(error.message) : response.ok ? '' : `HTTP ${response.status}`,
  };
}

/** An element with attributes and children; strings become text nodes. */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = String(value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

/** Sets the text of the element `id`. */
export function say(id, text, kind = '') {
  const node = document.getElementById(id);
  if (!node) return;
  node.textContent = text;
  node.dataset.kind = kind;
}

export function formatBitrate(bps) {
  if (!Number.isFinite(bps) || bps <= 0) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(1)} Mb/s`;
  return `${Math.round(bps / 1e3)} kb/s`;
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '–';
  const s = Math.floor(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

export function formatVideo(video) {
  if (!video) return '–';
  return `${video.width}×${video.height}`;
}

/** `rtmp://host:port/app/key` for players such as VLC, or '' when RTMP is off. */
export function rtmpUrl(app, key) {
  if (!page.rtmpPort) return '';
  return `rtmp://${location.hostname}:${page.rtmpPort}/${app}/${key}`;
}

/** Runs `task` now and every `ms` while the page is open, never two at once. */
export function every(ms, task) {
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      await task();
    } finally {
      running = false;
    }
  };
  run();
  return setInterval(run, ms);
}
