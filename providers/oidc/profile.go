package oidc

// Profile is the typed profile of an OpenID Connect identity
// (Identity.Profile): the standard claims of OpenID Connect Core §5.1, read
// from the id token (and userinfo when on) by their standard names. The
// Identity fields apply ClaimMapping; Profile does not.
type Profile struct {
	Issuer            string `json:"iss"`
	Subject           string `json:"sub"`
	Email             string `json:"email"`
	EmailVerified     bool   `json:"email_verified"`
	Name              string `json:"name"`
	GivenName         string `json:"given_name"`
	FamilyName        string `json:"family_name"`
	PreferredUsername string `json:"preferred_username"`
	Picture           string `json:"picture"`
	Locale            string `json:"locale"`
}

func profile(claims map[string]any) Profile {
	return Profile{
		Issuer:            stringClaim(claims, "iss"),
		Subject:           stringClaim(claims, "sub"),
		Email:             stringClaim(claims, "email"),
		EmailVerified:     boolClaim(claims, "email_verified"),
		Name:              stringClaim(claims, "name"),
		GivenName:         stringClaim(claims, "given_name"),
		FamilyName:        stringClaim(claims, "family_name"),
		PreferredUsername: stringClaim(claims, "preferred_username"),
		Picture:           stringClaim(claims, "picture"),
		Locale:            stringClaim(claims, "locale"),
	}
}
