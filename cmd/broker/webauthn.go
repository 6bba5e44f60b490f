package main

import (
	"github.com/brokerauth/broker/internal/server"
	"github.com/brokerauth/broker/webauthn"
)

// webauthnOptions wires passkeys when webauthn.rp_id is set.
func webauthnOptions(d featureDeps) (*server.WebAuthnOptions, error) {
	if !d.cfg.WebAuthnEnabled() {
		return nil, nil
	}
	w := d.cfg.WebAuthn
	rp, err := webauthn.New(webauthn.Config{
		RPID:             w.RPID,
		RPName:           w.RPName,
		Origins:          w.Origins,
		UserVerification: w.UserVerification,
	}, d.auth, d.flows)
	if err != nil {
		return nil, err
	}
	return &server.WebAuthnOptions{RelyingParty: rp}, nil
}
