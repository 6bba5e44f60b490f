package main

import "github.com/brokerauth/broker/internal/server"

// passwordOptions wires password sign-up and login when password.enabled:
// the length rule from password.min_length and the failure limit from
// limits.login_failures. Hashing uses the core's argon2id hasher (OWASP
// parameters, at most GOMAXPROCS hashes at once).
func passwordOptions(d featureDeps) (*server.PasswordOptions, error) {
	if !d.cfg.PasswordEnabled() {
		return nil, nil
	}
	return &server.PasswordOptions{
		MinLength:     d.cfg.Password.MinLength,
		MaxFailures:   d.cfg.Limits.LoginFailures.Max,
		FailureWindow: d.cfg.Limits.LoginFailures.Window,
	}, nil
}
