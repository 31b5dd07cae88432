// The page's one way to the server: JSON in, JSON out, and a failure said in the reader's words.

import { t } from "./i18n.js";

/** {status, data} of a request to the API; status 0 when the server cannot be reached. */
export async function api(path, { method = "GET", body = null, json = null } = {}) {
  const options = { method, headers: {} };
  if (json !== null) {
    options.body = JSON.stringify(json);
    options.headers["Content-Type"] = "application/json";
  } else if (body !== null) {
    options.body = body;
    options.headers["Content-Type"] = "application/octet-stream";
  }
  try {
    const response = await fetch(path, options);
    return { status: response.status, data: await response.json() };
  } catch (error) {
    return { status: 0, data: { error: t("error-unreachable"), code: "unreachable", args: {} } };
  }
}
