// The playground's JSON API, relative to the page (so it works under any mount path).

const TOKEN_KEY = "modrpc.playground.access";

export class ApiError extends Error {
  constructor(code, message, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

export function accessToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setAccessToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

async function request(method, path, body) {
  const headers = { accept: "application/json" };
  const token = accessToken();
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(`api/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new ApiError("UNAVAILABLE", `the playground cannot be reached: ${error.message}`, 0);
  }
  let data = null;
  try { data = await response.json(); } catch { data = null; }
  if (!response.ok) {
    const error = (data && data.error) || { code: `HTTP ${response.status}`, message: response.statusText };
    throw new ApiError(error.code, error.message, response.status);
  }
  return data;
}

export const api = {
  get: (path) => request("GET", path),
  post: (path, body = {}) => request("POST", path, body),
};

export const enc = encodeURIComponent;
