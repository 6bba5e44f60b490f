package main

import "github.com/brokerauth/broker/internal/server"

// webauthnOptions wires passkeys when webauthn.rp_id is set.
func webauthnOptions(d featureDeps) (*server.WebAuthnOptions, error) { return nil, nil }
