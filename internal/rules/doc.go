// Package rules compiles and runs the broker's CEL expressions: session
// claims (SPEC §7), forward-auth access rules (SPEC §9) and providers'
// sign-in restrictions and user attributes (SPEC §4), and encodes claims as
// forward-auth headers.
//
// Every expression is compiled once, at start, and a bad one is an error
// that names its configuration key ([CompileError]): claims.<name>,
// access[i].allow, providers.<p>.allow, providers.<p>.attributes.<name>.
// [Check] compiles one expression the same way, for the configuration
// validator. Expressions may use CEL's standard library and macros (has,
// all, exists, exists_one, map, filter) and the strings, lists and sets
// extensions.
//
// # Variables
//
// Every variable is a map with string keys. Absent optional values are null.
//
//   - user (claims, access): id, username, email, email_verified, name,
//     image, attributes (map), created_at (timestamp).
//   - keys (claims, access): a list with, for each of the user's keys, id,
//     provider_id and provider_user_id — never a password hash or provider
//     tokens; keys.map(k, k.provider_id) lists the user's providers.
//   - session (claims, access): id (the hex SHA-256, never the token),
//     state ("active", "idle"), active_expires, idle_expires, created_at,
//     authenticated_at (timestamps), attributes (map), user_agent, ip. With
//     no session it is an empty map: has(session.id) is false.
//   - claims (access): the user's claims as [Claims.Eval] gave them; a claim
//     that failed is absent.
//   - request (access): host (lower case, without port), path (as matched:
//     cleaned and decoded; see [Access.Decide]) and method.
//   - identity (provider allow and attributes): subject, email,
//     email_verified, name, picture, username (strings; "" when unknown),
//     claims (map: OpenID Connect id-token and userinfo claims, GitHub's
//     /user object) and orgs (list of strings: GitHub organizations with
//     read:org, otherwise empty). Never the provider tokens.
//
// # Evaluation
//
// Each evaluation of an expression is bounded by [DefaultCostLimit] and
// stops early when its context ends, so that no expression can hang a
// request. A failure is never a panic and never a 500:
//
//   - A claim or provider attribute that fails (a missing key: "no such
//     key", a wrong type, the cost limit) is left out and its [*EvalError]
//     returned for the log. One whose value is null is left out silently.
//   - An access rule or provider allow that fails, or gives anything but a
//     bool, refuses (fails closed) and returns the reason.
//
// Results leave CEL as plain Go values that encoding/json writes: string,
// bool, int64, float64, []any, map[string]any (timestamps as RFC 3339 UTC
// strings, durations as "90s", bytes as base64). [HeaderName] and
// [HeaderValue] turn a claim into its X-Auth-Claim-* header.
//
// # Access rules
//
// The first rule whose host and path prefix match decides; no matching rule
// lets any signed-in user pass. Hosts match case-insensitively without the
// port; prefixes match whole segments of the cleaned, percent-decoded path
// (/admin covers /admin, /admin/, /admin/x, /%61dmin, //admin, /x/../admin,
// /admin;x, not /administrator). Matching is case-sensitive (/ADMIN is not
// under /admin): a case-insensitive application must list both. A path with
// a bad %-escape is taken to be under every prefix, so a rule decides
// instead of none. See [Access.Decide].
//
// # Limits
//
// The cost of a CEL function call is counted after the call: one call of a
// string function on large strings (replace with an empty pattern on an
// attacker-long name) can allocate much before the limit stops the
// expression. Expressions come from the operator; keep them to simple
// comparisons on values users control.
package rules
