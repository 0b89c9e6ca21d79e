// Sitecore's Engage SDK (npm @sitecore/engage, Apache-2.0) in server mode against a Flow Lab sandbox (#11).
// Usage: node engage_e2e.cjs TARGET_URL CLIENT_KEY EMAIL   (run by tests/sandbox/test_triggers.py)
// Prints one JSON object: the cookie the SDK set and what each call answered.
const { initServer } = require('@sitecore/engage');

(async () => {
  const [targetURL, clientKey, email] = process.argv.slice(2);
  const engage = initServer({
    clientKey, targetURL, pointOfSale: 'lumen/de', cookieDomain: 'localhost', cookieExpiryDays: 365,
    forceServerCookieMode: true,
  });
  // a bare Node request/response pair, as an http server hands them over
  const request = { headers: { cookie: '' }, url: '/home' };
  const headers = {};
  const response = { setHeader: (name, value) => { headers[name.toLowerCase()] = value; } };
  await engage.handleCookie(request, response, 3000); // creates the browser: GET /v1.2/browser/create.json
  const cookie = [].concat(headers['set-cookie'] || []).join('; ');
  request.headers.cookie = cookie.split(';')[0];
  const page = { channel: 'WEB', currency: 'EUR', language: 'EN', page: 'home' };
  const out = { cookie: request.headers.cookie };
  out.view = await engage.pageView(page, request, { campaign: { id: 'spring' } });
  out.identity = await engage.identity({
    channel: 'WEB', currency: 'EUR', language: 'EN', email, firstName: 'Eng', lastName: 'Age',
    identifiers: [{ id: email, provider: 'email' }],
  }, request);
  out.custom = await engage.event('SUBSCRIBE_TO_UPDATES_IDENTITY', page, request);
  out.personalize = await engage.personalize(
    { channel: 'WEB', currency: 'EUR', language: 'EN', friendlyId: 'guest_greeting' }, request);
  console.log(JSON.stringify(out));
})().catch((error) => { console.error(String((error && error.stack) || error)); process.exit(1); });
