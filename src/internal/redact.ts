/**
 * Secrets kept out of logs, errors and output: a URL's password masked, wherever the URL is shown.
 *
 * @internal
 */

/**
 * Masks the password of a URL (`amqp://user:***@host/`), up to the last `@` before any query: a
 * password with an unencoded `/` or `@` in it (which no URL parser reads as one) is masked whole too.
 */
export const redactUrl = (url: string): string =>
  splitUrls(url).map((one) => one.replace(/\/\/([^:@/\s]*):[^\s?#]*@/, "//$1:***@")).join(",")

/**
 * The URLs of a comma-separated list (`amqp://a,amqp://b`): split at each comma a scheme follows, so
 * that a comma inside a password stays where it is. One URL is a list of one.
 */
export const splitUrls = (list: string): Array<string> =>
  list.split(/,(?=\s*[A-Za-z][A-Za-z0-9+.-]*:\/\/)/).map((url) => url.trim()).filter((url) => url !== "")
