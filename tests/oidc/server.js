// A Keycloak-shaped OpenID Connect provider for reporun's tests, built on `oidc-provider` (v9).
//
//   node server.js --port N [--realm reporun] [--issuer-host 127.0.0.1] [--audience reporun-api]
//                  [--access-token-ttl 300] [--host 127.0.0.1] [--issuer-url URL]
//                  [--realm-file realm.json] [--health-port M] [--web-origin URL]
//
// As Keycloak's stand-in in a container (the compose test): --host 0.0.0.0, --issuer-url the
// public address (KC_HOSTNAME), --realm-file the realm Keycloak would import (its realm, roles,
// clients with their secrets, users with their passwords and service accounts, `${VAR}` and
// `${VAR:default}` placeholders resolved from the environment as Keycloak does), and
// --health-port serving Keycloak's /health/ready and /health/live. With --issuer-url, the
// addresses of the discovery document are the issuer's own, unless --backchannel-dynamic
// (Keycloak's KC_HOSTNAME_BACKCHANNEL_DYNAMIC) makes them follow the request's host.
//
// Serves on 127.0.0.1:N, mounted at /realms/<realm> with Keycloak's routes:
//   issuer      http://<issuer-host>:N/realms/<realm>
//   discovery   /realms/<realm>/.well-known/openid-configuration
//   token       /realms/<realm>/protocol/openid-connect/token
//   jwks        /realms/<realm>/protocol/openid-connect/certs
//   device      /realms/<realm>/protocol/openid-connect/auth/device  (verification: /realms/<realm>/device)
//   userinfo    /realms/<realm>/protocol/openid-connect/userinfo
//   sign in     /realms/<realm>/protocol/openid-connect/auth  (a login form, #kc-form-login)
//   sign out    /realms/<realm>/protocol/openid-connect/logout (a confirmation, #kc-logout)
// Access tokens are RS256 JWTs carrying Keycloak's claims (azp, preferred_username,
// realm_access.roles, resource_access.<client>.roles, typ "Bearer"). Grants: password (Keycloak's
// "direct access grants"), client_credentials, device_code, refresh_token, and the authorization
// code with PKCE for the dashboard's client `reporun-web` (public; --web-origin the dashboard's
// address, whose /signin/callback it may return to, and /signin?signed_out=true after sign-out).
//
// The audience defaults to --audience; a token request may ask for others with
// `resource=urn:audience:<aud>[,<aud>...]` (e.g. `urn:audience:account` for Keycloak's habit of
// `aud: "account"` with the client in `azp`).
//
// Test hooks (not Keycloak): POST /test/rotate-keys[?keep_old=1] signs with a fresh RSA key from
// then on; without keep_old the old key is no longer published. GET /test/health answers 200.
// POST /test/sign {"claims": {...}, "header": {...}?} answers a JWT signed RS256 with the
// provider's own current key: what the issuer would issue with those claims (expired, not yet
// valid, another audience...), for the tests of what reporun refuses.
//
// Prints "ready <port>" on stdout once listening; exits on SIGTERM/SIGINT.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import { parseArgs } from 'node:util';

import { Provider, errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    realm: { type: 'string', default: 'reporun' },
    'issuer-host': { type: 'string', default: '127.0.0.1' },
    audience: { type: 'string', default: 'reporun-api' },
    'access-token-ttl': { type: 'string', default: '300' },
    host: { type: 'string', default: '127.0.0.1' },
    'issuer-url': { type: 'string' },
    'realm-file': { type: 'string' },
    'health-port': { type: 'string' },
    'backchannel-dynamic': { type: 'boolean', default: false },
    'web-origin': { type: 'string', default: 'http://127.0.0.1' },
  },
  strict: true,
});

if (!args.port || !/^\d+$/.test(args.port)) {
  process.stderr.write('usage: node server.js --port N [--realm R] [--issuer-host H]\n');
  process.exit(2);
}
const PORT = Number(args.port);
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const IMPORTED = args['realm-file'] ? importRealm(args['realm-file']) : undefined;
const REALM = IMPORTED ? IMPORTED.realm : args.realm;
const PREFIX = `/realms/${REALM}`;
const ISSUER = args['issuer-url']
  ? `${args['issuer-url'].replace(/\/+$/, '')}${PREFIX}`
  : `http://${args['issuer-host']}:${PORT}${PREFIX}`;
const DEFAULT_AUDIENCE = args.audience;
const ACCESS_TOKEN_TTL = Number(args['access-token-ttl']);
const AUDIENCE_URN = 'urn:audience:';
const API_CLIENT = 'reporun-api'; // the client whose client roles go into resource_access

// Keycloak-style users: `sub` is a UUID, roles are realm roles (and the same as client roles of
// reporun-api), `account` client roles as Keycloak grants every user by default.
let USERS = {
  user: {
    sub: '6f4c2a4e-8c1d-4a55-9a0e-2a1b7c3d9e01',
    password: 'user-password',
    roles: ['user'],
    email: 'user@example.org',
    name: 'Ursula User',
  },
  admin: {
    sub: '0b5e3f9a-1d2c-4e7b-8f60-4c2d1e9a7b02',
    password: 'admin-password',
    roles: ['admin', 'user'],
    email: 'admin@example.org',
    name: 'Ada Admin',
  },
  nobody: {
    sub: '9d8c7b6a-5f4e-4d3c-2b1a-0f9e8d7c6b03',
    password: 'nobody-password',
    roles: [],
    email: 'nobody@example.org',
    name: 'No Body',
  },
};

// Service accounts of confidential clients with client_credentials (Keycloak: "service accounts
// enabled"); their tokens name the service account.
let SERVICE_ACCOUNTS = {
  'reporun-service': {
    sub: '3a2b1c0d-9e8f-4a7b-6c5d-4e3f2a1b0c04',
    username: 'reporun-service',
    roles: ['admin'],
  },
};

let CLIENTS = [
  {
    client_id: 'reporun-cli',
    client_secret: 'cli-secret',
    grant_types: ['password', DEVICE_GRANT, 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic', // also accepts client_secret_post
  },
  {
    // A public client for the device flow, as a CLI usually is in Keycloak.
    client_id: 'reporun-cli-public',
    grant_types: ['password', DEVICE_GRANT, 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'none',
  },
  {
    // The dashboard: a public client of the code flow with PKCE (Keycloak: standard flow).
    client_id: 'reporun-web',
    grant_types: ['authorization_code'],
    response_types: ['code'],
    redirect_uris: [`${args['web-origin'].replace(/\/+$/, '')}/signin/callback`],
    post_logout_redirect_uris: [`${args['web-origin'].replace(/\/+$/, '')}/signin?signed_out=true`],
    token_endpoint_auth_method: 'none',
  },
  {
    client_id: 'reporun-service',
    client_secret: 'service-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    token_endpoint_auth_method: 'client_secret_basic',
  },
];

if (IMPORTED) ({ USERS, SERVICE_ACCOUNTS, CLIENTS } = IMPORTED);
const USERS_BY_SUB = Object.fromEntries(
  Object.entries(USERS).map(([username, user]) => [user.sub, { username, ...user }]),
);

// ---------------------------------------------------------------------------------------------
// a Keycloak realm file

function importRealm(path) {
  // Keycloak resolves ${VAR} and ${VAR:default} from its environment when it imports a realm.
  const text = fs.readFileSync(path, 'utf8').replace(/\$\{([A-Za-z_][A-Za-z0-9_.]*)(?::([^}]*))?\}/g,
    (whole, name, fallback) => {
      const value = process.env[name] ?? fallback;
      if (value === undefined) throw new Error(`${path}: ${name} is not set`);
      return JSON.stringify(value).slice(1, -1);
    });
  const realm = JSON.parse(text);
  const composites = Object.fromEntries(
    (realm.roles?.realm || []).map((r) => [r.name, r.composites?.realm || []]),
  );
  const expand = (roles) => {
    const seen = new Set();
    const visit = (name) => {
      if (seen.has(name)) return;
      seen.add(name);
      (composites[name] || []).forEach(visit);
    };
    roles.forEach(visit);
    return [...seen];
  };
  const users = {};
  const services = {};
  for (const user of realm.users || []) {
    const roles = expand(user.realmRoles || []);
    if (user.serviceAccountClientId) {
      services[user.serviceAccountClientId] = {
        sub: crypto.randomUUID(), username: user.username, roles,
      };
      continue;
    }
    const password = (user.credentials || []).find((c) => c.type === 'password')?.value;
    if (!user.enabled || !password) continue;
    users[user.username] = {
      sub: crypto.randomUUID(),
      password,
      roles,
      email: user.email,
      name: [user.firstName, user.lastName].filter(Boolean).join(' ') || user.username,
    };
  }
  const clients = [];
  for (const client of realm.clients || []) {
    if (!client.enabled || client.bearerOnly) continue;
    const grants = [];
    if (client.directAccessGrantsEnabled) grants.push('password', 'refresh_token');
    if (client.attributes?.['oauth2.device.authorization.grant.enabled'] === 'true') {
      grants.push(DEVICE_GRANT);
      if (!grants.includes('refresh_token')) grants.push('refresh_token');
    }
    if (client.serviceAccountsEnabled) grants.push('client_credentials');
    const code = client.standardFlowEnabled === true;
    if (code) grants.push('authorization_code');
    if (!grants.length) continue;
    // Keycloak keeps several post-logout redirect URIs in one attribute, split by "##".
    const afterLogout = (client.attributes?.['post.logout.redirect.uris'] || '')
      .split('##').filter(Boolean);
    clients.push({
      client_id: client.clientId,
      ...(client.publicClient
        ? { token_endpoint_auth_method: 'none' }
        : { client_secret: client.secret, token_endpoint_auth_method: 'client_secret_basic' }),
      grant_types: grants,
      response_types: code ? ['code'] : [],
      redirect_uris: code ? client.redirectUris || [] : [],
      ...(code ? { post_logout_redirect_uris: afterLogout } : {}),
    });
  }
  return { realm: realm.realm, USERS: users, SERVICE_ACCOUNTS: services, CLIENTS: clients };
}

// ---------------------------------------------------------------------------------------------
// keys

function freshSigningKey() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, kid: crypto.randomBytes(16).toString('base64url'), alg: 'RS256', use: 'sig' };
}

// The first key signs; the others are only published.
let signingKeys = [freshSigningKey()];
const COOKIE_KEYS = [crypto.randomBytes(32).toString('base64url')];

// ---------------------------------------------------------------------------------------------
// claims

function audiencesOf(resource) {
  if (resource?.startsWith(AUDIENCE_URN)) {
    const list = resource.slice(AUDIENCE_URN.length).split(',').filter(Boolean);
    if (list.length) return list;
  }
  return undefined;
}

function keycloakClaims(subject) {
  // subject: a user (USERS entry with username) or a service account
  const roles = [...subject.roles];
  return {
    typ: 'Bearer',
    preferred_username: subject.username,
    realm_access: { roles },
    resource_access: {
      [API_CLIENT]: { roles: [...roles] },
      account: { roles: ['manage-account', 'view-profile'] },
    },
    ...(subject.email
      ? { email: subject.email, email_verified: true, name: subject.name }
      : {}),
  };
}

function subjectOfToken(token) {
  if (token.accountId) {
    return USERS_BY_SUB[token.accountId];
  }
  return SERVICE_ACCOUNTS[token.clientId];
}

// ---------------------------------------------------------------------------------------------
// password grant (Keycloak's "direct access grants")

const PASSWORD_PARAMS = new Set(['username', 'password', 'scope', 'resource']);

async function passwordGrant(ctx) {
  const { provider, client, params } = ctx.oidc;
  const { username, password } = params;
  if (!username || !password) {
    throw new errors.InvalidRequest('username and password are required');
  }
  const user = USERS[username];
  const given = Buffer.from(String(password));
  const expected = Buffer.from(user ? user.password : 'x'.repeat(given.length || 1));
  const matches = given.length === expected.length && crypto.timingSafeEqual(given, expected);
  if (!user || !matches) {
    // Keycloak answers 401 invalid_grant "Invalid user credentials".
    const error = new errors.CustomOIDCProviderError('invalid_grant', 'Invalid user credentials');
    error.status = 401;
    error.statusCode = 401;
    throw error;
  }

  const requested = new Set((params.scope || 'openid profile email').split(' ').filter(Boolean));
  requested.add('openid');
  const scope = [...requested].join(' ');

  let resource = params.resource;
  if (Array.isArray(resource)) {
    if (resource.length !== 1) {
      throw new errors.InvalidTarget('only a single resource indicator value is supported');
    }
    [resource] = resource;
  }
  resource ||= `${AUDIENCE_URN}${DEFAULT_AUDIENCE}`;
  const info = await getResourceServerInfo(ctx, resource, client);

  const grant = new provider.Grant({ accountId: user.sub, clientId: client.clientId });
  grant.addOIDCScope(scope);
  grant.addResourceScope(resource, info.scope);
  const grantId = await grant.save();

  const at = new provider.AccessToken({
    accountId: user.sub,
    client,
    grantId,
    gty: 'password',
    scope: info.scope,
  });
  at.resourceServer = new provider.ResourceServer(resource, info);
  ctx.oidc.entity('Grant', grant);
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  const body = {
    access_token: accessToken,
    expires_in: at.expiration,
    token_type: at.tokenType,
    scope,
  };

  if (client.grantTypeAllowed('refresh_token')) {
    const rt = new provider.RefreshToken({
      accountId: user.sub,
      client,
      grantId,
      gty: 'password',
      scope,
      resource,
    });
    ctx.oidc.entity('RefreshToken', rt);
    body.refresh_token = await rt.save();
    body.refresh_expires_in = rt.expiration;
  }

  const idToken = new provider.IdToken(
    { ...(await (await findAccount(ctx, user.sub)).claims('id_token', scope)), acr: '1' },
    { ctx },
  );
  idToken.scope = scope;
  body.id_token = await idToken.issue({ use: 'idtoken' });

  ctx.body = body;
}

// ---------------------------------------------------------------------------------------------
// provider configuration

async function getResourceServerInfo(_ctx, resourceIndicator, _client) {
  const audiences = audiencesOf(resourceIndicator);
  if (!audiences) {
    throw new errors.InvalidTarget(`unknown resource ${resourceIndicator}`);
  }
  return {
    scope: 'openid profile email roles',
    audience: audiences[0],
    accessTokenTTL: ACCESS_TOKEN_TTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

async function findAccount(_ctx, sub) {
  const user = USERS_BY_SUB[sub];
  if (!user) return undefined;
  return {
    accountId: sub,
    async claims() {
      return {
        sub,
        preferred_username: user.username,
        email: user.email,
        email_verified: true,
        name: user.name,
      };
    },
  };
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head>`
    + `<body><h1>${title}</h1>${body}</body></html>`;
}

function configuration() {
  return {
    clients: CLIENTS,
    findAccount,
    jwks: { keys: signingKeys },
    cookies: { keys: COOKIE_KEYS },
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'roles'],
    routes: {
      authorization: '/protocol/openid-connect/auth',
      token: '/protocol/openid-connect/token',
      jwks: '/protocol/openid-connect/certs',
      userinfo: '/protocol/openid-connect/userinfo',
      introspection: '/protocol/openid-connect/token/introspect',
      revocation: '/protocol/openid-connect/revoke',
      end_session: '/protocol/openid-connect/logout',
      device_authorization: '/protocol/openid-connect/auth/device',
      code_verification: '/device',
    },
    features: {
      devInteractions: { enabled: false },
      introspection: { enabled: true },
      revocation: { enabled: true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        async logoutSource(ctx, form) {
          ctx.body = page(
            'Logging out',
            `<p>Do you want to log out?</p>${form}`
              + '<button id="kc-logout" type="submit" form="op.logoutForm" name="logout" value="yes">Logout</button>',
          );
        },
      },
      deviceFlow: {
        enabled: true,
        charset: 'base-20',
        mask: '****-****',
        async userCodeInputSource(ctx, form, _out, err) {
          const msg = err ? `<p class="error">${err.name}</p>` : '<p>Enter the code</p>';
          ctx.body = page('Device Login', `${msg}${form}<button type="submit" form="op.deviceInputForm">Submit</button>`);
        },
        async userCodeConfirmSource(ctx, form, client, _deviceInfo, userCode) {
          ctx.body = page(
            'Confirm Device',
            `<p>${client.clientId}</p><code>${userCode}</code>${form}`
              + '<button type="submit" form="op.deviceConfirmForm">Continue</button>',
          );
        },
        async successSource(ctx) {
          ctx.body = page('Device Login Successful', '<p>You may close this page.</p>');
        },
      },
      resourceIndicators: {
        enabled: true,
        async defaultResource(_ctx, _client, oneOf) {
          if (oneOf) return oneOf;
          return `${AUDIENCE_URN}${DEFAULT_AUDIENCE}`;
        },
        async useGrantedResource() {
          return true;
        },
        getResourceServerInfo,
      },
    },
    interactions: {
      url(_ctx, interaction) {
        return `${PREFIX}/interaction/${interaction.uid}`;
      },
    },
    async extraTokenClaims(_ctx, token) {
      const subject = subjectOfToken(token);
      if (!subject) return undefined;
      return { azp: token.clientId, ...keycloakClaims(subject) };
    },
    formats: {
      customizers: {
        async jwt(_ctx, token, jwt) {
          // Keycloak: header typ "JWT"; a service account's sub is its user's id.
          jwt.header = { typ: 'JWT' };
          const service = !token.accountId && SERVICE_ACCOUNTS[token.clientId];
          if (service) jwt.payload.sub = service.sub;
          const audiences = audiencesOf(token.resourceServer?.identifier());
          if (audiences && audiences.length > 1) jwt.payload.aud = audiences;
          jwt.payload.scope ||= 'profile email';
        },
      },
    },
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    ttl: {
      AccessToken: ACCESS_TOKEN_TTL,
      ClientCredentials: ACCESS_TOKEN_TTL,
      DeviceCode: 600,
      Grant: 3600,
      IdToken: ACCESS_TOKEN_TTL,
      Interaction: 600,
      RefreshToken: 1800,
      Session: 3600,
    },
    loadExistingGrant: async (ctx) => {
      // No consent screen (Keycloak's default for first-party clients): grant what is asked.
      const { client, session } = ctx.oidc;
      const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
      grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid');
      const resource = `${AUDIENCE_URN}${DEFAULT_AUDIENCE}`;
      grant.addResourceScope(resource, 'openid profile email roles');
      for (const indicator of Object.keys(ctx.oidc.resourceServers || {})) {
        grant.addResourceScope(indicator, 'openid profile email roles');
      }
      await grant.save();
      return grant;
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = page('Error', `<pre>${JSON.stringify(out).replace(/</g, '&lt;')}</pre>`);
    },
  };
}

function makeProvider() {
  const provider = new Provider(ISSUER, configuration());
  provider.registerGrantType('password', passwordGrant, PASSWORD_PARAMS);
  provider.on('server_error', (_ctx, err) => {
    process.stderr.write(`oidc server_error: ${err?.stack || err}\n`);
  });
  return provider;
}

let provider = makeProvider();
let callback = provider.callback();

// ---------------------------------------------------------------------------------------------
// login page for interactions (device flow)

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

function send(res, status, type, body) {
  res.statusCode = status;
  res.setHeader('Content-Type', type);
  res.setHeader('Cache-Control', 'no-store');
  res.end(body);
}

function loginPage(uid, error) {
  return page(
    'Sign in to reporun',
    `${error ? `<p class="error">${error}</p>` : ''}`
      + `<form id="kc-form-login" method="post" action="${PREFIX}/interaction/${uid}/login">`
      + '<input type="text" name="username" autofocus/>'
      + '<input type="password" name="password"/>'
      + '<button type="submit">Sign In</button></form>',
  );
}

async function interaction(req, res, uid, action) {
  const current = provider;
  let details;
  try {
    details = await current.interactionDetails(req, res);
  } catch (err) {
    send(res, 400, 'text/html; charset=utf-8', page('Error', `<p>${err.name}: ${err.message}</p>`));
    return;
  }
  if (details.uid !== uid) {
    send(res, 400, 'text/html; charset=utf-8', page('Error', '<p>interaction mismatch</p>'));
    return;
  }
  const { prompt } = details;
  if (prompt.name === 'login') {
    if (req.method === 'GET') {
      send(res, 200, 'text/html; charset=utf-8', loginPage(uid));
      return;
    }
    if (req.method === 'POST' && action === 'login') {
      const form = await readForm(req);
      const user = USERS[form.get('username') || ''];
      if (!user || user.password !== form.get('password')) {
        send(res, 401, 'text/html; charset=utf-8', loginPage(uid, 'Invalid username or password.'));
        return;
      }
      await current.interactionFinished(req, res, { login: { accountId: user.sub } });
      return;
    }
  }
  if (prompt.name === 'consent') {
    // Keycloak asks no consent for such clients: grant what was asked.
    const grant = details.grantId
      ? await current.Grant.find(details.grantId)
      : new current.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    const { missingOIDCScope, missingResourceScopes } = prompt.details;
    if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
    if (missingResourceScopes) {
      for (const [indicator, scopes] of Object.entries(missingResourceScopes)) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
    }
    const grantId = await grant.save();
    await current.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }
  send(res, 400, 'text/html; charset=utf-8', page('Error', `<p>unsupported prompt ${prompt.name}</p>`));
}

// ---------------------------------------------------------------------------------------------
// http server

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, `http://${req.headers.host || '127.0.0.1'}`);
    const { pathname } = url;

    if (pathname === '/test/health') {
      send(res, 200, 'text/plain', 'ok\n');
      return;
    }
    if (pathname === '/test/sign' && req.method === 'POST') {
      const chunks = [];
      for await (const chunk of req) chunks.push(chunk);
      const { claims, header } = JSON.parse(Buffer.concat(chunks).toString() || '{}');
      const key = signingKeys[0];
      const head = { alg: 'RS256', typ: 'JWT', kid: key.kid, ...(header || {}) };
      const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
      const input = `${encode(head)}.${encode(claims || {})}`;
      const privateKey = crypto.createPrivateKey({ key, format: 'jwk' });
      const signature = crypto.sign('sha256', Buffer.from(input), privateKey).toString('base64url');
      send(res, 200, 'application/json', JSON.stringify({ token: `${input}.${signature}` }));
      return;
    }
    if (pathname === '/test/rotate-keys' && req.method === 'POST') {
      const keepOld = ['1', 'true', 'yes'].includes(url.searchParams.get('keep_old') || '');
      const fresh = freshSigningKey();
      signingKeys = keepOld ? [fresh, ...signingKeys] : [fresh];
      provider = makeProvider();
      callback = provider.callback();
      send(res, 200, 'application/json', JSON.stringify({ kid: fresh.kid, kids: signingKeys.map((k) => k.kid) }));
      return;
    }

    const interactionMatch = pathname.match(
      new RegExp(`^${PREFIX}/interaction/([A-Za-z0-9_-]+)(?:/(login))?$`),
    );
    if (interactionMatch) {
      await interaction(req, res, interactionMatch[1], interactionMatch[2]);
      return;
    }

    if (pathname === PREFIX || pathname.startsWith(`${PREFIX}/`)) {
      if (args['issuer-url'] && !args['backchannel-dynamic']) {
        // Keycloak with a fixed hostname: every address it hands out is the public one.
        req.headers.host = new URL(ISSUER).host;
      }
      // Mounted as express would: the provider sees the path below the prefix.
      req.originalUrl = req.url;
      req.url = req.url.slice(PREFIX.length) || '/';
      req.baseUrl = PREFIX;
      callback(req, res);
      return;
    }

    send(res, 404, 'application/json', JSON.stringify({ error: 'not_found' }));
  } catch (err) {
    process.stderr.write(`oidc test server error: ${err?.stack || err}\n`);
    if (!res.headersSent) send(res, 500, 'application/json', JSON.stringify({ error: 'server_error' }));
    else res.end();
  }
});

function stop() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

server.listen(PORT, args.host, () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});

if (args['health-port']) {
  // Keycloak's management port: /health/ready and /health/live.
  http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://localhost');
    if (pathname === '/health/ready' || pathname === '/health/live' || pathname === '/health') {
      send(res, 200, 'application/json', JSON.stringify({ status: 'UP', checks: [] }));
    } else {
      send(res, 404, 'application/json', JSON.stringify({ error: 'not_found' }));
    }
  }).listen(Number(args['health-port']), args.host);
}
