// Package config loads, validates and explains the broker's configuration
// (SPEC §8). It is the only package that imports viper; every other package
// receives the typed [Config] struct.
//
// # Precedence
//
// Each key's value comes from, lowest to highest:
//
//  1. the built-in default ([Defaults]; every key has one, so every key can be
//     overridden from the environment, see viper issues #188 and #761);
//  2. the YAML file given to [Load] (or, in development mode, the development
//     defaults of [Dev]);
//  3. the environment: BROKER_ followed by the key path upper-cased, with "."
//     (and "-", which shells do not accept in names) turned into "_", e.g.
//     BROKER_DATABASE_URL, BROKER_SERVER_LISTEN,
//     BROKER_PROVIDERS_OIDC_DEX_CLIENT_SECRET. A list is comma-separated
//     (BROKER_REDIRECT_ALLOWED_ORIGINS=https://a.example,https://b.example),
//     with blanks around items trimmed.
//
// The environment only overrides keys that exist already, in the defaults or
// the file. An OIDC instance (providers.oidc.<name>) therefore has to appear in
// the file before BROKER_PROVIDERS_OIDC_<NAME>_* applies to it; once it does,
// every key of the instance (not only those written in the file) can be
// overridden, because the instance's defaults are registered as soon as its
// name is seen. Entries of the name → expression maps (claims, attributes) can
// be overridden only when the file has them. The access list cannot be set
// from the environment.
//
// The environment is read through the getenv function passed to [Load] and
// [Dev] rather than through viper's AutomaticEnv, which reads the process
// environment: tests inject their own, and nothing here touches process-wide
// state.
//
// # Decisions
//
//   - Viper lowercases every key, so map keys (OIDC instance names, claim names,
//     attribute names) are lowercase whatever case the file uses.
//   - Unknown keys are errors, reported with their full path (server.lisen) and,
//     where a known key is close, a suggestion. Values of the wrong type are
//     errors naming the key (and the environment variable when one set it).
//   - Durations are Go durations ("10s", "336h"); a bare number is refused
//     rather than read as nanoseconds.
//   - Any secret x may be given as x_file instead: a path whose contents
//     (surrounding blanks trimmed) are the secret. Setting both is an error. A
//     relative path in the file is relative to the file's directory; one from
//     the environment is relative to the working directory. Files are read by
//     [Load] and [Dev], never by [Config.Validate]. Besides the secrets section
//     this covers database.url_file (the URL may hold a password), the
//     providers' client_secret_file and email.smtp.password_file.
//     secrets.cookie_keys_file and secrets.token_keys_file hold several keys
//     separated by blanks, commas or new lines.
//   - The cookie keyring is secrets.cookie_key followed by secrets.cookie_keys
//     (duplicates dropped); the first key seals, every key opens. The token
//     keyring is built the same way. [Load] exposes the decoded rings as
//     [Config.CookieKeys] and [Config.TokenKeys]. Keys are standard or URL-safe
//     base64, padded or not, of exactly 32 bytes.
//   - A cookie key is required (outside development mode) when an OAuth/OIDC
//     provider or passkeys are on, because their flow state lives in a sealed
//     cookie; a token key is required when an OAuth/OIDC provider is on,
//     because provider tokens are stored encrypted.
//   - database.url has no default outside development mode: a production
//     broker names its database.
//   - limits.email_sends (default 5 per hour, per address and per client IP)
//   - limits.signups (default 100 per hour, password and passkey sign-ups per client IP)
//     complements limits.login_failures.
//   - redirect.allowed_origins entries are exact origins; an entry whose host
//     starts with "*." (https://*.example.com) allows every subdomain, matched
//     on whole labels (see [Redirect.AllowsOrigin]).
//   - An OIDC instance's display_name defaults to its name; its scopes must
//     include openid, and so must Google's.
//   - When passkeys are on, webauthn.origins must include the origin of
//     server.public_url, since the login page runs the ceremonies there.
//   - An access rule without allow lets every signed-in user through (useful
//     before a broader rule, since the first match wins).
//   - CEL expressions are compiled, never evaluated, by [Config.Validate],
//     with internal/rules' Check: the environments that run them (a claim
//     sees user, keys and session; an access rule also claims and request;
//     provider expressions identity), so that what `broker check-config`
//     accepts is what runs.
//   - [Config.Validate] gathers every problem with [errors.Join], each a
//     [*FieldError] naming the key's path; [Explain] turns any error of this
//     package into one line per problem for `broker check-config`.
package config
