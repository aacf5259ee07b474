/**
 * Secrets kept out of logs, errors and output: a URL's password masked, wherever the URL is shown.
 *
 * @internal
 */

/**
 * Masks the password of a URL (`amqp://user:***@host/`), up to the last `@` before any query: a
 * password with an unencoded `/` or `@` in it (which no URL parser reads as one) is masked whole too.
 */
export const redactUrl = (url: string): string => url.replace(/\/\/([^:@/\s]*):[^\s?#]*@/, "//$1:***@")
